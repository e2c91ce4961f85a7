package clientsetup

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// An imported local server gets the network only when it is one of the
// servers below, named exactly: the package a runner (npx, uvx...) is
// asked to fetch, or the basename of the command itself. A word found
// anywhere in the command line is not enough: `@evil/mcp-notion-helper`
// is not Notion's server, and `/home/u/linear-algebra/server.js` is not
// Linear's. So:
//
//   - a package counts only as the package argument of a runner it knows
//     (npx, bunx, pnpm dlx, pnpx, yarn dlx, npm exec for npm; uvx, uv tool
//     run, pipx run for PyPI), with at most a plain @version (==version
//     on PyPI), and only in that registry's list;
//   - a runner flag it does not know (another registry, extra packages,
//     a shell command) makes it no match;
//   - paths never match: `node /opt/.../server-github/dist/index.js` gets
//     no network, whatever the path says;
//   - a command counts by its own name, and a runner as one, only when
//     it is root's, in a system directory (/usr/bin/github-mcp-server,
//     /usr/bin/npx, or the bare name found there): a file of the user's
//     (a cloned project's ./npx) can be anything;
//   - uv's --python must be a version (3.12, cpython@3.12), not a path to
//     an interpreter of the user's;
//   - an entry that sets its working directory (a project whose
//     node_modules or .npmrc says what runs) or env that changes what a
//     runner fetches or runs (NODE_OPTIONS, npm_config_*, UV_*, PIP_*,
//     PYTHON*, PATH, LD_*...) gets no network.
//
// No match is the safe default: the server runs with no network, and the
// user gives it what it needs (mcpcage server add NAME --egress ...).

// registry is where a runner fetches packages from.
type registry int

const (
	npmRegistry registry = iota + 1
	pypiRegistry
)

// networkPackages are the packages of servers whose job is the network,
// by registry, each its exact published name. Linear's server is remote
// only (no package), and names not known for sure are left out.
var networkPackages = map[registry][]string{
	npmRegistry: {
		"@modelcontextprotocol/server-github", "@modelcontextprotocol/server-gitlab",
		"@modelcontextprotocol/server-brave-search", "@modelcontextprotocol/server-slack",
		"@modelcontextprotocol/server-google-maps", "@modelcontextprotocol/server-puppeteer",
		"@modelcontextprotocol/server-postgres", "@modelcontextprotocol/server-everart",
		"@modelcontextprotocol/server-aws-kb-retrieval", "@modelcontextprotocol/server-gdrive",
		"@notionhq/notion-mcp-server", "@stripe/mcp", "firecrawl-mcp", "tavily-mcp", "exa-mcp-server",
	},
	pypiRegistry: {"mcp-server-fetch", "mcp-server-sentry"},
}

// networkCommands are the commands those packages install (the name in
// their package's bin or scripts), and GitHub's own server binary.
var networkCommands = []string{
	"github-mcp-server", "mcp-server-github", "mcp-server-brave-search", "mcp-server-puppeteer",
	"mcp-server-postgres", "mcp-server-everart", "mcp-server-aws-kb-retrieval", "mcp-server-gdrive",
	"mcp-server-fetch",
}

// runnerFlag is how a runner treats one of its flags.
type runnerFlag int

const (
	flagIgnore  runnerFlag = iota + 1 // no value, no bearing on the package
	flagValue                         // takes a value with no bearing on the package
	flagPackage                       // takes the package to fetch (the positional is a command of it)
	flagVersion                       // takes a version of the runner's language (not a path)
)

// runner is a command that fetches a package and runs it.
type runner struct {
	registry registry
	flags    map[string]runnerFlag
}

var (
	npmRunner = runner{npmRegistry, map[string]runnerFlag{
		"-y": flagIgnore, "--yes": flagIgnore, "-q": flagIgnore, "--quiet": flagIgnore, "-s": flagIgnore, "--silent": flagIgnore,
		"--bun": flagIgnore, "-p": flagPackage, "--package": flagPackage,
	}}
	pypiRunner = runner{pypiRegistry, map[string]runnerFlag{
		"-q": flagIgnore, "--quiet": flagIgnore, "--isolated": flagIgnore,
		"--python": flagVersion, "--from": flagPackage, "--spec": flagPackage,
	}}
)

// runners are the runners by command basename and the subcommand words
// before their arguments.
var runners = []struct {
	command string
	sub     []string
	runner
}{
	{"npx", nil, npmRunner}, {"bunx", nil, npmRunner}, {"pnpx", nil, npmRunner},
	{"pnpm", []string{"dlx"}, npmRunner}, {"yarn", []string{"dlx"}, npmRunner},
	{"npm", []string{"exec"}, npmRunner}, {"npm", []string{"x"}, npmRunner},
	{"uvx", nil, pypiRunner}, {"uv", []string{"tool", "run"}, pypiRunner},
	{"pipx", []string{"run"}, pypiRunner},
}

// knownNetworkServer names the known network server entry e runs, or
// says "" when it runs none of them; why then says what kept a known
// server's name from counting ("" when nothing did). rootOwned reports
// a file of root's in a directory of root's, neither writable by others.
func knownNetworkServer(e entry, rootOwned func(string) bool) (known, why string) {
	command, args := e.Command, e.Args
	base := filepath.Base(command)
	if slices.Contains(networkCommands, base) {
		if !systemCommand(command, rootOwned) {
			return "", fmt.Sprintf("it runs %s, which is not root's in a system directory (%s)", command, strings.Join(systemDirs, ", "))
		}
		known = base
	}
	for _, r := range runners {
		if known != "" || r.command != base || len(args) < len(r.sub) || !slices.Equal(args[:len(r.sub)], r.sub) {
			continue
		}
		pkg, ok := r.packageArg(args[len(r.sub):])
		if !ok {
			return "", ""
		}
		if !systemCommand(command, rootOwned) {
			return "", fmt.Sprintf("it runs %s, which is not root's in a system directory (%s)", command, strings.Join(systemDirs, ", "))
		}
		if name, ok := packageName(r.registry, pkg); ok && slices.Contains(networkPackages[r.registry], name) {
			known = name
		}
		break
	}
	switch {
	case known == "":
		return "", ""
	case e.Cwd != "":
		return "", fmt.Sprintf("it would run %s, but in a working directory of its own (%s), whose files can say what runs", known, e.Cwd)
	}
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		if redirectsRun(k) {
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		sort.Strings(keys)
		return "", fmt.Sprintf("it would run %s, but its env sets %s, which can change what runs", known, strings.Join(keys, ", "))
	}
	return known, ""
}

// systemDirs are where a known server's command counts by its name.
var systemDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// systemCommand reports a command that is a file of root's in one of
// systemDirs: that path, or a bare name found there.
func systemCommand(command string, rootOwned func(string) bool) bool {
	if !strings.Contains(command, "/") {
		for _, dir := range systemDirs {
			if rootOwned(filepath.Join(dir, command)) {
				return true
			}
		}
		return false
	}
	return slices.Contains(systemDirs, filepath.Dir(command)) && filepath.Clean(command) == command && rootOwned(command)
}

// rootOwned reports a regular file of root's, in a directory of root's,
// that no one else may write.
func rootOwned(path string) bool {
	for _, p := range []string{path, filepath.Dir(path)} {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil || st.Uid != 0 || st.Mode&0o022 != 0 {
			return false
		}
	}
	return true
}

// redirectPrefixes start env variables (in any case) that change what a
// runner fetches or runs, or what the program it starts loads.
var redirectPrefixes = []string{"NODE_", "NPM_", "YARN_", "PNPM_", "BUN_", "COREPACK_", "UV_", "PIP_", "PIPX_", "PYTHON",
	"VIRTUAL_ENV", "CONDA_", "LD_", "DYLD_", "XDG_", "GIT_"}

// redirectsRun reports an env variable that can change what runs.
func redirectsRun(key string) bool {
	k := strings.ToUpper(key)
	if k == "PATH" || k == "HOME" {
		return true
	}
	for _, p := range redirectPrefixes {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// packageArg finds the package a runner's arguments fetch: the value of
// its package flag (once), else its first positional argument. A flag it
// does not know makes it refuse; so does a command given after a package
// flag (`npx -p PKG sh -c ...` runs sh, not PKG's server) unless it is a
// known server's command.
func (r runner) packageArg(args []string) (string, bool) {
	var pkgs []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 >= len(args) {
				break
			}
			if len(pkgs) == 0 {
				return args[i+1], true
			}
			if !r.serverCommand(args[i+1], pkgs[0]) {
				return "", false
			}
			break
		}
		if !strings.HasPrefix(a, "-") {
			if len(pkgs) == 0 {
				return a, true
			}
			if !r.serverCommand(a, pkgs[0]) {
				return "", false
			}
			break
		}
		flag, value, inline := strings.Cut(a, "=")
		switch r.flags[flag] {
		case flagIgnore:
			if inline {
				return "", false
			}
		case flagValue, flagPackage, flagVersion:
			if !inline {
				if i+1 >= len(args) {
					return "", false
				}
				i++
				value = args[i]
			}
			switch r.flags[flag] {
			case flagPackage:
				pkgs = append(pkgs, value)
			case flagVersion:
				if !languageVersion.MatchString(value) {
					return "", false // --python /home/u/evil: an interpreter of the user's
				}
			}
		default:
			return "", false // --registry, --with, -c...: not a plain fetch of one package
		}
	}
	if len(pkgs) != 1 {
		return "", false
	}
	return pkgs[0], true
}

// serverCommand reports whether command, given after a package flag of
// pkg, runs a server of it: a known server's command, or one named as
// the package (uvx --from mcp-server-sentry==0.6.2 mcp-server-sentry).
func (r runner) serverCommand(command, pkg string) bool {
	if slices.Contains(networkCommands, command) {
		return true
	}
	name, ok := packageName(r.registry, pkg)
	return ok && command == name
}

// languageVersion is a version of an interpreter a runner picks itself
// (3.12, python3.12, cpython@3.12.1, pypy3.10), never a path.
var languageVersion = regexp.MustCompile(`^(?:(?:cpython|pypy|graalpy|python)[-@]?)?[0-9]+(?:\.[0-9]+){0,2}$`)

// plainVersion is a version, range or tag after a package name: no
// alias (npm:other), url, path or extras.
var plainVersion = regexp.MustCompile(`^[~^]?[A-Za-z0-9][A-Za-z0-9.+_-]*$`)

// packageName strips a plain version from a package argument; ok is
// false for anything but a registry name (a path, a url, an alias).
func packageName(reg registry, arg string) (string, bool) {
	name, version := arg, ""
	switch reg {
	case npmRegistry:
		if at := strings.LastIndexByte(arg, '@'); at > 0 {
			name, version = arg[:at], arg[at+1:]
		}
	case pypiRegistry:
		if n, v, ok := strings.Cut(arg, "=="); ok {
			name, version = n, v
		} else if at := strings.LastIndexByte(arg, '@'); at > 0 {
			name, version = arg[:at], arg[at+1:]
		}
	}
	if arg != name && !plainVersion.MatchString(version) {
		return "", false
	}
	return name, true
}
