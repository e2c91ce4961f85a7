package identity

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// grammar is what the daemon knows of an interpreter's command line: the
// options it may skip to find the script. Anything else that starts with
// '-' leaves the script unidentified: an option the daemon took for a
// flag but that takes a value would make it hash the wrong file.
type grammar struct {
	short      string   // single-letter flags, clusterable (-Bu)
	shortValue string   // single-letter options with a value, attached or next (-W x, -Wx)
	long       []string // long flags (--no-warnings); any --name=value is also skipped
	longValue  []string // long options whose value is the next argument
	code       []string // options that run or load other code: no script identity
	env        []string // environment variables that load other code ("X_" ends in a prefix)
	plus       bool     // shells: +o opt, +O opt
	sub        []string // subcommands skipped before the script (deno run)
	scriptOpt  string   // option whose value is the script (php -f)
	bare       bool     // never identifies a script (busybox: argv[0] picks the program)
}

var (
	preload = []string{"LD_PRELOAD", "LD_AUDIT"}
	shell   = grammar{short: "aefhkmnpuvxBCEHPT", shortValue: "oO", plus: true,
		long: []string{"--login", "--noprofile", "--norc", "--posix", "--noediting", "--restricted", "--verbose", "--"},
		code: []string{"-c", "-s", "-i", "--rcfile", "--init-file", "--debugger"},
		env:  append([]string{"BASH_ENV", "ENV", "ZDOTDIR", "BASH_FUNC_", "SHELLOPTS", "BASHOPTS", "PS4"}, preload...)}
	node = grammar{
		long: []string{"--no-warnings", "--enable-source-maps", "--trace-warnings", "--trace-uncaught", "--expose-gc",
			"--no-deprecation", "--throw-deprecation", "--trace-deprecation", "--pending-deprecation", "--preserve-symlinks",
			"--preserve-symlinks-main", "--abort-on-uncaught-exception", "--experimental-vm-modules", "--no-experimental-fetch",
			"--frozen-intrinsics", "--no-addons", "--experimental-strip-types", "--no-experimental-strip-types",
			"--experimental-transform-types", "--jitless", "--use-openssl-ca", "--use-bundled-ca", "--openssl-legacy-provider"},
		longValue: []string{"--title", "--conditions", "-C", "--input-type", "--max-old-space-size", "--stack-size", "--unhandled-rejections"},
		code: []string{"-e", "--eval", "-p", "--print", "-r", "--require", "--import", "--loader", "--experimental-loader", "-i",
			"--interactive", "-c", "--check", "--inspect", "--inspect-brk", "--inspect-wait", "--inspect-port", "--debug-port",
			"--env-file", "--env-file-if-exists", "--run", "--openssl-config", "--snapshot-blob", "--experimental-config-file",
			"--experimental-sea-config", "--watch-path", "--test"},
		env: append([]string{"NODE_OPTIONS", "NODE_PATH", "NODE_REPL_EXTERNAL_MODULE", "ELECTRON_RUN_AS_NODE"}, preload...)}
	python = grammar{short: "bBdEIOPqsSuvx", shortValue: "WX",
		longValue: []string{"--check-hash-based-pycs"}, long: []string{"--"},
		code: []string{"-c", "-m", "-i"},
		env:  append([]string{"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONUSERBASE", "PYTHONEXECUTABLE"}, preload...)}
	perl = grammar{short: "acnpstTuUwWX", code: []string{"-e", "-E", "-M", "-m", "-I", "-d", "-x", "-i"},
		env: append([]string{"PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB"}, preload...)}
	ruby = grammar{short: "acdlnpsvwW", code: []string{"-e", "-r", "-I", "-x", "-i", "-C"},
		env: append([]string{"RUBYOPT", "RUBYLIB"}, preload...)}
	deno = grammar{short: "Aq", sub: []string{"run"}, long: []string{"--allow-all", "--quiet", "--no-check", "--no-prompt", "--no-remote", "--no-npm"},
		code: []string{"--import-map", "--config", "-c", "--preload", "--inspect", "--inspect-brk", "--inspect-wait", "--env-file", "--watch", "--reload", "-r"},
		env:  append([]string{"DENO_DIR", "DENO_CERT"}, preload...)}
	bun = grammar{sub: []string{"run"}, long: []string{"--bun", "--smol", "--silent"},
		code: []string{"-r", "--preload", "--hot", "--watch", "--inspect", "--inspect-brk", "--inspect-wait", "-e", "--eval", "-p", "--print", "--env-file", "--config", "-c"},
		env:  append([]string{"NODE_OPTIONS", "BUN_INSPECT", "NODE_PATH"}, preload...)}
	php = grammar{short: "hHnqs", scriptOpt: "-f", code: []string{"-r", "-B", "-R", "-E", "-F", "-a", "-d", "-c", "-z", "-S", "-t"},
		env: append([]string{"PHPRC", "PHP_INI_SCAN_DIR"}, preload...)}
	lua  = grammar{short: "iEW", code: []string{"-e", "-l", "-i", "-"}, env: append([]string{"LUA_INIT", "LUA_PATH", "LUA_CPATH"}, preload...)}
	bare = grammar{bare: true}
)

// interpreters by executable base name, trailing version stripped
// (python3.12 -> python).
var interpreters = map[string]*grammar{
	"node": &node, "nodejs": &node, "bun": &bun, "deno": &deno,
	"python": &python, "pypy": &python,
	"bash": &shell, "sh": &shell, "dash": &shell, "zsh": &shell, "ksh": &shell, "mksh": &shell, "yash": &shell, "ash": &shell,
	"fish": &bare, "tcsh": &bare, "csh": &bare, "busybox": &bare, "pwsh": &bare, "tclsh": &bare, "wish": &bare,
	"Rscript": &bare, "R": &bare, "osascript": &bare, "java": &bare, "jshell": &bare, "guile": &bare, "racket": &bare,
	"perl": &perl, "ruby": &ruby, "php": &php, "lua": &lua, "luajit": &lua,
}

func interpreterOf(exe string) (*grammar, bool) {
	name := strings.TrimRight(path.Base(exe), "0123456789.-")
	if name == "" {
		name = path.Base(exe)
	}
	g, ok := interpreters[name]
	return g, ok
}

// IsInterpreter reports whether exe (a path) is an interpreter or a shell:
// as an agent, "exe:" + exe means any script it runs.
func IsInterpreter(exe string) bool {
	_, ok := interpreterOf(exe)
	return ok
}

// scriptArg finds the script among args (argv without argv[0]); why says
// why there is none. Every element of args is complete (splitArgv drops
// a cut one): at worst the script is not found.
func (g *grammar) scriptArg(args []string) (script, why string) {
	if g.bare {
		return "", "the daemon does not read this interpreter's command line"
	}
	i := 0
	if i < len(args) && slices.Contains(g.sub, args[i]) {
		i++
	}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if a == "-" {
			return "", "it reads its program from stdin"
		}
		if g.scriptOpt != "" && a == g.scriptOpt {
			if i+1 < len(args) {
				return args[i+1], ""
			}
			return "", "no script"
		}
		plus := g.plus && strings.HasPrefix(a, "+") && len(a) > 1
		if !strings.HasPrefix(a, "-") && !plus {
			break
		}
		if strings.HasPrefix(a, "--") {
			name, _, hasValue := strings.Cut(a, "=")
			switch {
			case slices.Contains(g.code, name):
				return "", fmt.Sprintf("option %s runs other code", name)
			case slices.Contains(g.longValue, name):
				if !hasValue {
					i++
				}
			case slices.Contains(g.long, name), hasValue:
			default:
				return "", fmt.Sprintf("unrecognised option %s", name)
			}
			continue
		}
		if slices.Contains(g.code, a) || (len(a) > 2 && slices.Contains(g.code, a[:2])) {
			return "", fmt.Sprintf("option %s runs other code", a[:2])
		}
		if slices.Contains(g.longValue, a) { // single-dash long names (node -C)
			i++
			continue
		}
		for j := 1; j < len(a); j++ {
			c := a[j]
			if slices.Contains(g.code, "-"+string(c)) {
				return "", fmt.Sprintf("option -%c runs other code", c)
			}
			if strings.IndexByte(g.shortValue, c) >= 0 {
				if j == len(a)-1 {
					i++ // the value is the next argument
				}
				break
			}
			if strings.IndexByte(g.short, c) < 0 {
				return "", fmt.Sprintf("unrecognised option %c%c", a[0], c)
			}
		}
	}
	if i >= len(args) {
		return "", "no script (interactive, or a program on stdin)"
	}
	return args[i], ""
}

// injected returns an environment variable that loads other code.
func (g *grammar) injected(environ []byte) string {
	for _, kv := range bytes.Split(environ, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		for _, e := range g.env {
			if (k == e || (strings.HasSuffix(e, "_") && strings.HasPrefix(k, e))) && v != "" {
				if e == "NODE_OPTIONS" && nodeOptionsHarmless(v) {
					continue
				}
				return k
			}
		}
	}
	return ""
}

// nodeOptionsHarmless reports whether NODE_OPTIONS holds known flags
// only (e.g. --max-old-space-size=4096), nothing that loads code.
func nodeOptionsHarmless(v string) bool {
	value := false // the previous option takes this token as its value
	for _, a := range strings.Fields(v) {
		name, _, hasValue := strings.Cut(a, "=")
		switch {
		case value:
			value = false
		case slices.Contains(node.code, name):
			return false
		case slices.Contains(node.longValue, name):
			value = !hasValue
		case slices.Contains(node.long, name), strings.HasPrefix(a, "--") && hasValue:
		default:
			return false
		}
	}
	return true
}

// splitArgv splits a NUL-separated argv. When the copy was cut short
// (total > len(b)), the last, partial argument is dropped.
func splitArgv(b []byte, total int) []string {
	cut := total > len(b)
	b = bytes.TrimSuffix(b, []byte{0})
	if len(b) == 0 {
		return nil
	}
	parts := strings.Split(string(b), "\x00")
	if cut {
		parts = parts[:len(parts)-1]
	}
	return parts
}

// script identifies what interpreter pid runs. With the exec record
// (st), argv and the working directory are the kernel's at exec; without
// it, /proc/PID/cmdline and the current working directory.
func (h *Hasher) script(pid int, g *grammar, st *Stamp) Script {
	var argv []string
	if st != nil {
		argv = splitArgv(st.Argv, st.ArgvLen)
	} else {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return Script{Why: "cannot read its command line"}
		}
		argv = splitArgv(b, len(b))
	}
	if len(argv) == 0 {
		return Script{Why: "empty command line"}
	}
	arg, why := g.scriptArg(argv[1:])
	if why != "" {
		return Script{Why: why}
	}
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return Script{Why: "cannot read its environment"}
	}
	if k := g.injected(env); k != "" {
		return Script{Why: "environment variable " + k + " loads other code"}
	}
	s, err := h.openScript(pid, arg, st)
	if err != nil {
		return Script{Why: err.Error()}
	}
	return s
}

// openScript resolves and hashes the script arg of process pid, as the
// process sees it: relative to its working directory at exec, inside its
// root directory.
func (h *Hasher) openScript(pid int, arg string, st *Stamp) (Script, error) {
	p := arg
	if !filepath.IsAbs(arg) {
		cwd := fmt.Sprintf("/proc/%d/cwd", pid)
		if st != nil {
			var fi unix.Stat_t
			if err := unix.Stat(cwd, &fi); err != nil {
				return Script{}, fmt.Errorf("cannot see its working directory")
			}
			if fi.Dev != st.CwdDev || fi.Ino != st.CwdIno {
				return Script{}, fmt.Errorf("it changed directory since it started %s", arg)
			}
		}
		dir, err := os.Readlink(cwd)
		if err != nil || !filepath.IsAbs(dir) {
			return Script{}, fmt.Errorf("cannot resolve its working directory")
		}
		p = filepath.Join(dir, arg)
	}
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return Script{}, fmt.Errorf("cannot see its root directory")
	}
	defer root.Close()
	fd, err := unix.Openat2(int(root.Fd()), p, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return Script{}, fmt.Errorf("cannot open script %s: %v", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var fi unix.Stat_t
	if err := unix.Fstat(fd, &fi); err != nil || fi.Mode&unix.S_IFMT != unix.S_IFREG {
		return Script{}, fmt.Errorf("script %s is not a regular file", p)
	}
	if sameRoot(pid) {
		// The resolved path (symbolic links followed), as this process
		// sees it: the same view.
		if real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil && filepath.IsAbs(real) {
			p = real
		}
	}
	sum, err := h.sumFile(f)
	if err != nil {
		return Script{}, err
	}
	return Script{Path: p, SHA256: sum}, nil
}

// sameRoot reports whether pid has this process's root and mount namespace.
func sameRoot(pid int) bool {
	for _, l := range []string{"root", "ns/mnt"} {
		var a, b unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/%s", pid, l), &a) != nil || unix.Stat("/proc/self/"+l, &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
			return false
		}
	}
	return true
}
