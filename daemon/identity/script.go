package identity

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcpcage/mcpcage/internal/fscred"
)

// grammar is what the daemon knows of an interpreter's command line: the
// options it may skip to find the script. Anything else that starts with
// '-' leaves the script unidentified: an option the daemon took for a
// flag but that takes a value would make it hash the wrong file.
type grammar struct {
	short      string                       // single-letter flags, clusterable (-Bu)
	shortValue string                       // single-letter options with a value, attached or next (-W x, -Wx)
	values     map[byte][]string            // allowed values of a shortValue option (name before '='); others run other code
	long       []string                     // long flags (--no-warnings), also with =value
	longValue  []string                     // long options whose value is the next argument (or after '=')
	underscore bool                         // long option names may spell '-' as '_' (node: --pending_deprecation)
	check      map[byte]func(string) string // a shortValue option's value check: why it runs other code, or ""
	code       []string                     // options that run or load other code: no script identity
	need       byte                         // a flag without which the interpreter runs other code first (python -I)
	needLong   []string                     // or long options, as whole arguments, any of which does (ruby --disable-gems)
	needWhy    string                       // what runs without it
	login      bool                         // shells: argv[0] "-sh" is a login shell, which runs profile files first
	env        []string                     // environment variables that load other code ("X_" ends in a prefix)
	envOwn     []string                     // the interpreter's own variable prefixes: only envAllow of them are accepted
	envAllow   []string                     // accepted variables under envOwn
	program    func(p programInfo) string   // checks where the interpreter finds itself (python: venvs, stdlib)
	plus       bool                         // shells: +o opt, +O opt
	sub        []string                     // subcommands skipped before the script (deno run)
	scriptOpt  string                       // option whose value is the script (php -f)
	bare       bool                         // never identifies a script (busybox: argv[0] picks the program)
	bareWhy    string                       // why, when it is not that the daemon does not read the command line
}

// loader are variables that make any program load other code: the
// dynamic loader's, glibc's iconv modules, OpenSSL's configuration (which
// loads engines and providers). Refused for every interpreter.
var loader = []string{"LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "GCONV_PATH", "OPENSSL_CONF", "OPENSSL_MODULES", "OPENSSL_ENGINES"}

var (
	shellCode = []string{"-c", "-s", "-i", "-l", "--login", "--rcfile", "--init-file", "--debugger"}
	// BASH_ENV, ENV and ZDOTDIR name startup files; BASH_FUNC_* are
	// exported functions, which replace commands; PS4 is expanded (and
	// can run commands) under xtrace, which SHELLOPTS can turn on.
	shellEnv = []string{"ENV", "ZDOTDIR", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND"}
	shell    = grammar{short: "aefhkmnpuvxBCEHPT", shortValue: "oO", plus: true, login: true,
		long: []string{"--noprofile", "--norc", "--posix", "--noediting", "--restricted", "--verbose", "--"},
		code: shellCode, env: shellEnv, envOwn: []string{"BASH_"}}
	// zsh reads ~/.zshenv (under ZDOTDIR or HOME) before any script,
	// unless -f (NO_RCS).
	zsh = grammar{short: shell.short, shortValue: shell.shortValue, plus: true, login: true, long: shell.long,
		code: shellCode, env: shellEnv, envOwn: []string{"BASH_"},
		need: 'f', needWhy: "zsh without -f runs ~/.zshenv first (run the script as zsh -f script)"}
	node = grammar{
		underscore: true,
		long: []string{"--no-warnings", "--enable-source-maps", "--trace-warnings", "--trace-uncaught", "--expose-gc",
			"--no-deprecation", "--throw-deprecation", "--trace-deprecation", "--pending-deprecation", "--preserve-symlinks",
			"--preserve-symlinks-main", "--abort-on-uncaught-exception", "--experimental-vm-modules", "--no-experimental-fetch",
			"--frozen-intrinsics", "--no-addons", "--experimental-strip-types", "--no-experimental-strip-types",
			"--experimental-transform-types", "--jitless", "--use-openssl-ca", "--use-bundled-ca", "--openssl-legacy-provider"},
		longValue: []string{"--title", "--conditions", "-C", "--input-type", "--max-old-space-size", "--stack-size", "--unhandled-rejections"},
		code: []string{"-e", "--eval", "-p", "--print", "-r", "--require", "--import", "--loader", "--experimental-loader", "-i",
			"--interactive", "-c", "--check", "--inspect", "--inspect-brk", "--inspect-wait", "--inspect-port", "--debug-port",
			"--env-file", "--env-file-if-exists", "--run", "--openssl-config", "--snapshot-blob", "--experimental-config-file",
			"--experimental-sea-config", "--watch-path", "--test", "--openssl-shared-config"},
		env:    []string{"ELECTRON_RUN_AS_NODE"},
		envOwn: []string{"NODE_"},
		// Not NODE_PATH (module search), NODE_REPL_EXTERNAL_MODULE,
		// NODE_COMPILE_CACHE (compiled code from a directory),
		// NODE_ICU_DATA, nor any variable node may add later.
		envAllow: []string{"NODE_OPTIONS", "NODE_ENV", "NODE_NO_WARNINGS", "NODE_EXTRA_CA_CERTS", "NODE_TLS_REJECT_UNAUTHORIZED",
			"NODE_DISABLE_COLORS", "NODE_PENDING_DEPRECATION", "NODE_DEBUG", "NODE_DEBUG_NATIVE", "NODE_CHANNEL_FD",
			"NODE_CHANNEL_SERIALIZATION_MODE", "NODE_UNIQUE_ID", "NODE_USE_ENV_PROXY", "NODE_SKIP_PLATFORM_CHECK",
			"NODE_PRESERVE_SYMLINKS", "NODE_V8_COVERAGE", "NODE_REDIRECT_WARNINGS", "NODE_MAX_OLD_SPACE_SIZE"}}
	// Python runs site-packages .pth files (the user's, under HOME, among
	// them) and honours PYTHON* variables before the script: only -I
	// (isolated: -E, -s, -P) stops that, so only an -I run is
	// identified; PYTHON* variables are then ignored by python itself.
	python = grammar{short: "bBdEIOPqsSuvx", shortValue: "WX", check: map[byte]func(string) string{'W': pythonWarningFilter},
		values: map[byte][]string{'X': {"faulthandler", "showrefcount", "tracemalloc", "importtime", "dev", "utf8",
			"warn_default_encoding", "no_debug_ranges", "int_max_str_digits", "perf", "perf_jit", "cpu_count", "gil",
			"disable_remote_debug", "frozen_modules"}},
		longValue: []string{"--check-hash-based-pycs"}, long: []string{"--"},
		code: []string{"-c", "-m", "-i"},
		need: 'I', needWhy: "python without -I runs site-packages .pth files (the user's too) and honours PYTHON* variables first (run it as python3 -I script.py)",
		program: pythonProgram}
	perl = grammar{short: "acnpstTuUwWX", code: []string{"-e", "-E", "-M", "-m", "-I", "-d", "-x", "-i"},
		env: []string{"PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB"}}
	// Ruby loads RubyGems before the script, and RubyGems loads gems
	// (did_you_mean, error_highlight: the highest version on the gem
	// path, which starts in the user's ~/.local/share/gem): only a run
	// with gems off is identified. The spellings are the exact ones
	// (ruby also takes abbreviations and other cases, which leave the
	// script unidentified: an unknown option).
	ruby = grammar{short: "acdlnpsvwW", code: []string{"-e", "-r", "-I", "-x", "-i", "-C"},
		needLong: []string{"--disable-gems", "--disable=gems", "--disable-all", "--disable=all"},
		needWhy:  "ruby without --disable-gems loads RubyGems first, which loads gems (did_you_mean, error_highlight) from the user's gem directory (run the script as ruby --disable-gems script.rb)",
		env:      []string{"RUBYOPT", "RUBYLIB"}}
	deno = grammar{short: "Aq", sub: []string{"run"}, long: []string{"--allow-all", "--quiet", "--no-check", "--no-prompt", "--no-remote", "--no-npm"},
		code: []string{"--import-map", "--config", "-c", "--preload", "--inspect", "--inspect-brk", "--inspect-wait", "--env-file", "--watch", "--reload", "-r"},
		env:  []string{"DENO_DIR", "DENO_CERT"}}
	php = grammar{short: "hHnqs", scriptOpt: "-f", code: []string{"-r", "-B", "-R", "-E", "-F", "-a", "-d", "-c", "-z", "-S", "-t"},
		env: []string{"PHPRC", "PHP_INI_SCAN_DIR"}}
	// lua reads LUA_INIT, LUA_PATH and LUA_CPATH, and first their
	// versioned names (LUA_INIT_5_4): every LUA_ variable is refused.
	lua = grammar{short: "iEW", code: []string{"-e", "-l", "-i", "-"}, env: []string{"LUA_"}}
	// bun runs the preload of a bunfig.toml in its working directory or
	// the user's home before the script, and reads .env files there: no
	// command line shows that, so bun never identifies a script.
	bun  = grammar{bare: true, bareWhy: "bun runs the preload of a bunfig.toml in its working directory or the user's home before the script, which its command line does not show"}
	bare = grammar{bare: true}
	// electron runs the app it is given (a directory, an archive or a
	// script), which the daemon does not identify: a system Electron that
	// runs a distribution's build of a client is every Electron app's
	// (found by a red-team helper).
	electron = grammar{bare: true, bareWhy: "electron runs whatever app it is given, which the daemon does not identify"}
)

// interpreters by executable base name, trailing version stripped
// (python3.12 -> python).
var interpreters = map[string]*grammar{
	"node": &node, "nodejs": &node, "bun": &bun, "deno": &deno,
	"python": &python, "pypy": &python,
	"bash": &shell, "sh": &shell, "dash": &shell, "zsh": &zsh, "ksh": &shell, "mksh": &shell, "yash": &shell, "ash": &shell,
	"fish": &bare, "tcsh": &bare, "csh": &bare, "busybox": &bare, "pwsh": &bare, "tclsh": &bare, "wish": &bare,
	"Rscript": &bare, "R": &bare, "osascript": &bare, "java": &bare, "jshell": &bare, "guile": &bare, "racket": &bare,
	"perl": &perl, "ruby": &ruby, "php": &php, "lua": &lua, "luajit": &lua,
	"electron": &electron,
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
		if g.bareWhy != "" {
			return "", g.bareWhy
		}
		return "", "the daemon does not read this interpreter's command line"
	}
	i, needed := 0, false
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
		if slices.Contains(g.needLong, a) {
			needed = true
			continue
		}
		if strings.HasPrefix(a, "--") {
			name, _, hasValue := strings.Cut(a, "=")
			name = g.optionName(name)
			switch {
			case slices.Contains(g.code, name):
				return "", fmt.Sprintf("option %s runs other code", name)
			case slices.Contains(g.longValue, name):
				if !hasValue {
					i++
				}
			case slices.Contains(g.long, name):
			default:
				// An option mcpcage does not know may load code (node
				// passes unknown ones to V8, and takes '_' for '-').
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
				v := a[j+1:]
				if v == "" {
					i++ // the value is the next argument
					if i < len(args) {
						v = args[i]
					}
				}
				if allowed, ok := g.values[c]; ok {
					if name, _, _ := strings.Cut(v, "="); !slices.Contains(allowed, name) {
						return "", fmt.Sprintf("option -%c %s may load other code", c, name)
					}
				}
				if check, ok := g.check[c]; ok {
					if why := check(v); why != "" {
						return "", fmt.Sprintf("option -%c %s %s", c, v, why)
					}
				}
				break
			}
			if strings.IndexByte(g.short, c) < 0 {
				return "", fmt.Sprintf("unrecognised option %c%c", a[0], c)
			}
			if c == g.need && a[0] == '-' {
				needed = true
			}
		}
	}
	if i >= len(args) {
		return "", "no script (interactive, or a program on stdin)"
	}
	if (g.need != 0 || len(g.needLong) > 0) && !needed {
		return "", g.needWhy
	}
	if args[i] == "-" {
		// After "--" too: node, python, perl and ruby then read their
		// program from stdin, while the daemon would read a file named
		// "-" in the working directory (found by a red-team helper).
		return "", "it reads its program from stdin"
	}
	return args[i], ""
}

// optionName is a long option's name as the interpreter reads it: node
// takes --experimental_loader for --experimental-loader.
func (g *grammar) optionName(name string) string {
	if g.underscore && strings.HasPrefix(name, "--") {
		return "--" + strings.ReplaceAll(name[2:], "_", "-")
	}
	return name
}

// pythonWarningFilter checks a -W filter (action:message:category:module:
// lineno): a category with a dot names a module that python imports at
// start-up, before the script (python3 -W ignore::antigravity.X runs the
// standard library's antigravity, which starts $BROWSER). A category
// without one is a built-in warning class, looked up, not imported.
func pythonWarningFilter(v string) string {
	parts := strings.Split(v, ":")
	if len(parts) > 2 && strings.Contains(parts[2], ".") {
		return "imports module " + strings.TrimSpace(parts[2][:strings.LastIndexByte(parts[2], '.')]) + " before the script"
	}
	return ""
}

// injected returns an environment variable that loads other code: one of
// loader or g.env, or one under g.envOwn that g.envAllow does not accept.
func (g *grammar) injected(environ []byte) string {
	for _, kv := range bytes.Split(environ, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		if k == "" || v == "" {
			continue
		}
		if slices.Contains(loader, k) || matches(g.env, k) {
			return k
		}
		if matches(g.envOwn, k) && !slices.Contains(g.envAllow, k) {
			return k
		}
		if k == "NODE_OPTIONS" && slices.Contains(g.envAllow, k) && !nodeOptionsHarmless(v) {
			return k
		}
	}
	return ""
}

// matches reports whether name is one of names, or starts with one of
// them that ends in '_'.
func matches(names []string, name string) bool {
	for _, e := range names {
		if name == e || (strings.HasSuffix(e, "_") && strings.HasPrefix(name, e)) {
			return true
		}
	}
	return false
}

// nodeOptionsHarmless reports whether NODE_OPTIONS holds known flags
// only (e.g. --max-old-space-size=4096), nothing that loads code.
func nodeOptionsHarmless(v string) bool {
	value := false // the previous option takes this token as its value
	for _, a := range strings.Fields(v) {
		name, _, hasValue := strings.Cut(a, "=")
		name = node.optionName(name)
		switch {
		case value:
			value = false
		case slices.Contains(node.code, name):
			return false
		case slices.Contains(node.longValue, name):
			value = !hasValue
		case slices.Contains(node.long, name):
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

// script identifies what interpreter pid (running exe) runs. With the
// exec record (st), argv, the working directory and env are the kernel's
// at exec; without it, /proc/PID/cmdline, the current working directory
// and /proc/PID/environ.
func (h *Hasher) script(pid int, exe string, g *grammar, st *Stamp, env agentEnv) Script {
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
	if g.login && strings.HasPrefix(argv[0], "-") {
		return Script{Why: "a login shell (argv[0] " + argv[0] + ") runs profile files first"}
	}
	if env.unchecked != "" {
		return Script{Why: "its environment was " + env.unchecked}
	}
	if k := g.cutChecked(env.cut); k != "" {
		return Script{Why: tooLong(k)}
	}
	if k := g.injected(env.vars); k != "" {
		return Script{Why: "environment variable " + k + " loads other code"}
	}
	if g.program != nil {
		if why := g.program(programInfo{pid: pid, argv0: argv[0], exe: exe, environ: env.vars, pathCut: slices.Contains(env.cut, "PATH"), st: st}); why != "" {
			return Script{Why: why}
		}
	}
	s, err := h.openScript(pid, arg, st)
	if err != nil {
		return Script{Why: err.Error()}
	}
	return s
}

// climbs reports whether the relative path p has a ".." component: joined
// to a working directory's name, it depends on that name, which its owner
// can change (a rename keeps the directory, and its inode, the same).
func climbs(p string) bool {
	return slices.Contains(strings.Split(p, "/"), "..")
}

// programInfo is what a grammar's program check sees.
type programInfo struct {
	pid     int
	argv0   string
	exe     string // the resolved executable (/proc/PID/exe)
	environ []byte
	pathCut bool // PATH was too long for the kernel to keep
	st      *Stamp
}

// agentEnv is the agent's environment as agentEnviron found it.
type agentEnv struct {
	vars      []byte   // "NAME=VALUE", NUL-separated
	cut       []string // variables too long to keep, by name
	unchecked string   // why vars may not be all of them
}

// pythonProgram checks where python looked for its installation. It
// starts from the program it was run as (argv[0]; searched in PATH when
// it has no slash, not resolved through symbolic links) and from its
// executable: a pyvenv.cfg or a ._pth file beside it or one directory up,
// or a standard library (lib/pythonX.Y/os.py) in any directory above it,
// takes over site-packages and every import, -I or not. So each of those
// directories must be root's and writable by no one else.
func pythonProgram(p programInfo) string {
	prog, err := programPath(p)
	if err != nil {
		return err.Error()
	}
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", p.pid))
	if err != nil {
		return "cannot see its root directory"
	}
	defer func() { _ = root.Close() }()
	for _, start := range []string{prog, p.exe} {
		for dir := filepath.Dir(start); ; dir = filepath.Dir(dir) {
			if why := rootOnly(root, dir); why != "" {
				return "python finds its installation from " + start + ", and " + why
			}
			if dir == "/" {
				break
			}
		}
	}
	return ""
}

// programPath resolves argv[0] as python does: a path with a slash
// against the working directory at exec, else the first executable file
// of that name in PATH.
func programPath(p programInfo) (string, error) {
	if strings.Contains(p.argv0, "/") {
		if filepath.IsAbs(p.argv0) {
			return filepath.Clean(p.argv0), nil
		}
		if climbs(p.argv0) {
			return "", fmt.Errorf("it was started as %s, which climbs out of its working directory (..): start it by an absolute path", p.argv0)
		}
		dir, err := cwdAtExec(p.pid, p.st)
		if err != nil {
			return "", err
		}
		return filepath.Join(dir, p.argv0), nil
	}
	if p.pathCut {
		return "", fmt.Errorf("it was started as %s and %s which one (start it by an absolute path)", p.argv0, tooLong("PATH"))
	}
	path := ""
	for _, kv := range bytes.Split(p.environ, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("PATH=")); ok {
			path = string(v)
		}
	}
	if path == "" {
		return "", fmt.Errorf("cannot tell which %s it was started as: no PATH", p.argv0)
	}
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", p.pid))
	if err != nil {
		return "", fmt.Errorf("cannot see its root directory")
	}
	defer func() { _ = root.Close() }()
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			return "", fmt.Errorf("its PATH has a relative directory (%q) before %s", dir, p.argv0)
		}
		c := filepath.Join(dir, p.argv0)
		fd, err := unix.Openat2(int(root.Fd()), c, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
		if err != nil {
			continue
		}
		var fi unix.Stat_t
		err = unix.Fstat(fd, &fi)
		_ = unix.Close(fd)
		if err == nil && fi.Mode&unix.S_IFMT == unix.S_IFREG && fi.Mode&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("cannot find %s in its PATH", p.argv0)
}

// rootOnly says why dir, inside root, is not a directory only root can
// change ("" when it is).
func rootOnly(root *os.File, dir string) string {
	fd, err := unix.Openat2(int(root.Fd()), dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return fmt.Sprintf("%s cannot be checked (%v)", dir, err)
	}
	defer func() { _ = unix.Close(fd) }()
	var fi unix.Stat_t
	if err := unix.Fstat(fd, &fi); err != nil {
		return fmt.Sprintf("%s cannot be checked (%v)", dir, err)
	}
	if fi.Uid != 0 || fi.Mode&0o022 != 0 {
		return fmt.Sprintf("%s is not root's alone (uid %d, mode %o)", dir, fi.Uid, fi.Mode&0o7777)
	}
	return ""
}

// cwdAtExec is the working directory pid had at exec (with the record;
// else its current one), as it sees it.
func cwdAtExec(pid int, st *Stamp) (string, error) {
	cwd := fmt.Sprintf("/proc/%d/cwd", pid)
	if err := inOwnMounts(pid, "cwd"); err != nil {
		// Its name, joined to a relative path, would name a file of the
		// agent's own namespace, not the one the interpreter opened.
		return "", err
	}
	if st != nil {
		var fi unix.Stat_t
		if err := unix.Stat(cwd, &fi); err != nil {
			return "", fmt.Errorf("cannot see its working directory")
		}
		if fi.Dev != st.CwdDev || fi.Ino != st.CwdIno {
			return "", fmt.Errorf("it changed directory since it started")
		}
	}
	dir, err := os.Readlink(cwd)
	if err != nil || !filepath.IsAbs(dir) {
		return "", fmt.Errorf("cannot resolve its working directory")
	}
	return dir, nil
}

// openScript resolves and hashes the script arg of process pid, as the
// process sees it: relative to its working directory at exec, inside its
// root directory.
func (h *Hasher) openScript(pid int, arg string, st *Stamp) (Script, error) {
	p := arg
	if !filepath.IsAbs(arg) {
		if climbs(arg) {
			// Joined to the working directory's name now: renamed since
			// exec (same directory, so the exec record still matches),
			// "../x" would land elsewhere than it did for the interpreter.
			return Script{}, fmt.Errorf("its relative path %s climbs out of the working directory (..): start it by an absolute path", arg)
		}
		dir, err := cwdAtExec(pid, st)
		if err != nil {
			return Script{}, fmt.Errorf("%v (script %s)", err, arg)
		}
		p = filepath.Join(dir, arg)
	}
	root, err := os.Open(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil {
		return Script{}, fmt.Errorf("cannot see its root directory")
	}
	defer func() { _ = root.Close() }()
	// The links on the way are resolved here, each checked, and the
	// result opened with none followed: what is hashed is what the
	// checked path names.
	real, why := resolveRootLinks(root, p)
	if why != "" {
		return Script{}, fmt.Errorf("script %s: %s", p, why)
	}
	// Found with O_PATH and checked to be a regular file before it is
	// opened for reading: the path comes from the agent's argv, and an
	// open of a device or FIFO, as root, would act on it (a watchdog
	// armed, a FIFO's writer woken).
	//
	// And found with the agent's own file-system credentials, read access
	// checked: mcpcaged hashes the script as root and shows the hash to
	// the session's user (sessions, session.start), so a path the agent
	// cannot read itself (another user's key, /etc/shadow, a file in a
	// directory it cannot search) would tell that user the hash of a
	// file they may not read.
	pfd, err := openAsAgent(pid, int(root.Fd()), real)
	if err != nil {
		return Script{}, fmt.Errorf("cannot open script %s: %v", real, err)
	}
	var fi unix.Stat_t
	err = unix.Fstat(pfd, &fi)
	if err != nil || fi.Mode&unix.S_IFMT != unix.S_IFREG {
		_ = unix.Close(pfd)
		return Script{}, fmt.Errorf("script %s is not a regular file", real)
	}
	if changedSince(&fi, st) {
		// The file at the path now is not shown to be the one the
		// interpreter read: a user who can write its directory can run
		// code of theirs from the path, then move the genuine script
		// back before starting the shim (found by a red-team helper).
		// A rename, link or write since changes its ctime.
		_ = unix.Close(pfd)
		return Script{}, fmt.Errorf("script %s was changed (written, renamed or linked) after the agent started, so it may not be what the agent runs: start the agent again", real)
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", pfd), unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	_ = unix.Close(pfd)
	if err != nil {
		return Script{}, fmt.Errorf("cannot open script %s: %v", real, err)
	}
	f := os.NewFile(uintptr(fd), real)
	defer func() { _ = f.Close() }()
	if foreign, err := foreignView(pid); err != nil {
		return Script{}, err
	} else if foreign {
		// A view of the file system of its own: the path must name the
		// same file outside, or a bind mount or a chroot of its own
		// would pass for the script there.
		if why := sameFileHere(real, &fi); why != "" {
			return Script{}, fmt.Errorf("script %s: %s", real, why)
		}
	}
	p = real
	sum, err := h.sumFile(f)
	if err != nil {
		return Script{}, err
	}
	return Script{Path: p, SHA256: sum}, nil
}

// changedSince reports whether fi's status changed after the exec st
// records (nil: no record, nothing to compare). The exec time is the
// kernel's boot clock; fi's ctime is the real-time clock: the exec's
// real time is now less the boot time since it. ctime is the kernel's
// coarse clock (a tick, 1 to 4 ms, behind), so a change within a tick of
// the exec can pass for one before it; one before the exec never counts.
func changedSince(fi *unix.Stat_t, st *Stamp) bool {
	if st == nil || st.Exec == 0 {
		return false
	}
	var boot unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil {
		return true // cannot tell: not shown to be unchanged
	}
	sinceExec := time.Duration(boot.Nano() - int64(st.Exec))
	execAt := time.Now().Add(-sinceExec)
	return time.Unix(fi.Ctim.Unix()).After(execAt)
}

// openAsAgent finds path below root (O_PATH) with the file-system
// credentials process pid has, and checks it may read it.
func openAsAgent(pid, root int, path string) (int, error) {
	c, err := fsCredOf(pid)
	if err != nil {
		return -1, err
	}
	fd := -1
	open := func() error {
		f, err := unix.Openat2(root, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_SYMLINKS})
		if err != nil {
			return err
		}
		if err := unix.Faccessat2(f, "", unix.R_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
			_ = unix.Close(f)
			return fmt.Errorf("the agent (uid %d) may not read it: %w", c.UID, err)
		}
		fd = f
		return nil
	}
	if c.UID == 0 {
		err = open()
	} else {
		err = fscred.Do(c, open)
	}
	return fd, err
}

// fsCredOf reads the credentials process pid is checked with: its real
// uid and gid (who started it: a setuid program the agent became since
// its exec was looked at does not lend it root's reach) and its
// supplementary groups (/proc/PID/status).
func fsCredOf(pid int) (fscred.Cred, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fscred.Cred{}, fmt.Errorf("read /proc/%d/status: %w", pid, ErrGone)
	}
	var c fscred.Cred
	var sawUID, sawGID bool
	for _, line := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		switch name {
		case "Uid", "Gid":
			if len(f) != 4 { // real, effective, saved, file system
				return fscred.Cred{}, fmt.Errorf("malformed %s line in /proc/%d/status", name, pid)
			}
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return fscred.Cred{}, fmt.Errorf("malformed %s line in /proc/%d/status", name, pid)
			}
			if name == "Uid" {
				c.UID, sawUID = uint32(n), true
			} else {
				c.GID, sawGID = uint32(n), true
			}
		case "Groups":
			for _, g := range f {
				n, err := strconv.ParseUint(g, 10, 32)
				if err != nil {
					return fscred.Cred{}, fmt.Errorf("malformed Groups line in /proc/%d/status", pid)
				}
				c.Groups = append(c.Groups, uint32(n))
			}
		}
	}
	if !sawUID || !sawGID {
		return fscred.Cred{}, fmt.Errorf("no Uid or Gid in /proc/%d/status", pid)
	}
	return c, nil
}
