package clientsetup

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/mcpcage/mcpcage/api"
)

// A `docker run ... IMAGE [ARGS]` entry (how the official GitHub server is
// distributed) becomes an image-based mcpcage server: the same image,
// pulled through containerd, with its entrypoint and ARGS, its -e
// variables (credentials moved to the user's secret store), its bind
// mounts and workdir. Docker's own isolation flags give way to mcpcage's
// sandbox; flags that change what the server sees or does in ways mcpcage
// cannot carry over leave the entry as it is, with the reason.

// dockerFlag is how one `docker run` flag is carried over.
type dockerFlag int

const (
	dockerIgnore     dockerFlag = iota // no meaning under mcpcage (-i, --rm, --name)
	dockerSandbox                      // isolation mcpcage's sandbox replaces (warned)
	dockerEnv                          // -e KEY[=VALUE]
	dockerVolume                       // -v SRC:DST[:ro]
	dockerMount                        // --mount type=bind,...
	dockerWorkdir                      // -w DIR
	dockerNetwork                      // --network NAME
	dockerEntrypoint                   // --entrypoint CMD
	dockerUser                         // -u USER (mcpcage runs the server as you)
	dockerRefuse                       // cannot be carried over: the entry stays
)

// dockerFlags maps the flags mcpcage understands; takesValue says
// whether the flag consumes the next argument when not written --f=v.
var dockerFlags = map[string]struct {
	how        dockerFlag
	takesValue bool
}{
	"-i": {dockerIgnore, false}, "--interactive": {dockerIgnore, false},
	"-t": {dockerIgnore, false}, "--tty": {dockerIgnore, false},
	"--rm": {dockerIgnore, false}, "--init": {dockerIgnore, false},
	"-q": {dockerIgnore, false}, "--quiet": {dockerIgnore, false},
	"--name": {dockerIgnore, true}, "--pull": {dockerIgnore, true}, "--platform": {dockerIgnore, true},
	"-l": {dockerIgnore, true}, "--label": {dockerIgnore, true}, "-h": {dockerIgnore, true}, "--hostname": {dockerIgnore, true},
	"--read-only": {dockerSandbox, false}, "--privileged": {dockerSandbox, false},
	"--cap-add": {dockerSandbox, true}, "--cap-drop": {dockerSandbox, true}, "--security-opt": {dockerSandbox, true},
	"-m": {dockerSandbox, true}, "--memory": {dockerSandbox, true}, "--cpus": {dockerSandbox, true}, "--pids-limit": {dockerSandbox, true},
	"-p": {dockerSandbox, true}, "--publish": {dockerSandbox, true},
	"-e": {dockerEnv, true}, "--env": {dockerEnv, true},
	"-v": {dockerVolume, true}, "--volume": {dockerVolume, true},
	"--mount": {dockerMount, true},
	"-w":      {dockerWorkdir, true}, "--workdir": {dockerWorkdir, true},
	"--network": {dockerNetwork, true}, "--net": {dockerNetwork, true},
	"--entrypoint": {dockerEntrypoint, true},
	"-u":           {dockerUser, true}, "--user": {dockerUser, true},
	"-d": {dockerRefuse, false}, "--detach": {dockerRefuse, false},
	"--env-file": {dockerRefuse, true}, "--volumes-from": {dockerRefuse, true}, "--device": {dockerRefuse, true},
	"--pid": {dockerRefuse, true}, "--ipc": {dockerRefuse, true}, "--gpus": {dockerRefuse, true},
}

// importDocker builds the image-based server of a `docker run` entry, or
// says why the entry stays as it is.
func importDocker(name, srvName string, e entry, o Options) (Server, string) {
	s := Server{Entry: name, ServerDef: api.ServerDef{Name: srvName, Network: "host"}}
	env := map[string]string{}
	var network string
	var entrypoint []string
	args := e.Args[1:] // after "run"
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || a == "-" {
			if a == "--" {
				i++
			}
			if i >= len(args) {
				break
			}
			s.Image = args[i]
			rest := args[i+1:]
			s.warnCredentialArgs(name, rest)
			if entrypoint != nil {
				s.Command = append(entrypoint, rest...)
			} else if len(rest) > 0 {
				s.Args = append([]string(nil), rest...)
			}
			break
		}
		flag, value, inline := strings.Cut(a, "=")
		spec, known := dockerFlags[flag]
		if !known && !inline && len(flag) > 2 && flag[1] != '-' && allBool(flag[1:]) {
			continue // -it: short booleans together
		}
		if !known {
			return Server{}, fmt.Sprintf("runs `docker run` with %s, which mcpcage cannot carry over; left as it is", flag)
		}
		if spec.takesValue && !inline {
			if i+1 >= len(args) {
				return Server{}, fmt.Sprintf("`docker run` flag %s has no value; left as it is", flag)
			}
			i++
			value = args[i]
		}
		switch spec.how {
		case dockerSandbox:
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: docker's %s is dropped: mcpcage's sandbox applies instead", name, flag))
		case dockerEnv:
			k, v, ok := strings.Cut(value, "=")
			if !ok {
				if v, ok = e.Env[k]; !ok {
					s.Warnings = append(s.Warnings, fmt.Sprintf("%s: docker passes %s from the client's environment, which mcpcage does not see; set it with `mcpcage server add %s --image ... --env %s=...`", name, k, s.Name, k))
					continue
				}
			}
			env[k] = v
		case dockerVolume, dockerMount:
			m, why := dockerBind(spec.how, value, o.Home)
			if why != "" {
				return Server{}, why
			}
			s.Mounts = append(s.Mounts, m)
		case dockerWorkdir:
			s.Workdir = value
		case dockerNetwork:
			network = value
		case dockerEntrypoint:
			entrypoint = []string{value}
		case dockerUser:
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: docker's --user %s is dropped: mcpcage runs the server as you", name, value))
		case dockerRefuse:
			return Server{}, fmt.Sprintf("runs `docker run` with %s, which mcpcage cannot carry over; left as it is", flag)
		}
	}
	if s.Image == "" {
		return Server{}, "runs `docker run` without an image; left as it is"
	}
	switch network {
	case "none":
		s.Network = "none"
		s.NetworkWhy = fmt.Sprintf("%s gets no network: docker ran it with --network none", name)
	default: // docker's default bridge, host, or a network of its own
		s.Egress = []string{"public:443"}
		s.NetworkWhy = fmt.Sprintf("%s gets the network: it had docker's network; under mcpcage it may reach any public address on port 443 (not the host, nor its local networks); narrow egress with `mcpcage server add`", name)
	}
	s.moveSecrets(env, o)
	return s, ""
}

// allBool reports whether every letter of a short-flag group is a
// boolean docker flag (-it).
func allBool(letters string) bool {
	for _, l := range letters {
		spec, ok := dockerFlags["-"+string(l)]
		if !ok || spec.takesValue || spec.how == dockerRefuse {
			return false
		}
	}
	return true
}

// dockerBind reads -v SRC:DST[:OPTS] or --mount type=bind,source=,target=[,readonly].
// Docker's binds are read-write unless marked read-only; so are these.
func dockerBind(how dockerFlag, value, home string) (api.MountDef, string) {
	var m api.MountDef
	readonly := false
	if how == dockerVolume {
		parts := strings.Split(value, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return m, fmt.Sprintf("`docker run -v %s` is not SRC:DST[:OPTS]; left as it is", value)
		}
		m.Source, m.Target = parts[0], parts[1]
		if len(parts) == 3 {
			for _, opt := range strings.Split(parts[2], ",") {
				readonly = readonly || opt == "ro" || opt == "readonly"
			}
		}
	} else {
		for _, kv := range strings.Split(value, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "type":
				if v != "bind" {
					return m, fmt.Sprintf("`docker run --mount %s` is not a bind mount; left as it is", value)
				}
			case "source", "src":
				m.Source = v
			case "target", "destination", "dst":
				m.Target = v
			case "readonly", "ro":
				readonly = v == "" || v == "true" || v == "1"
			}
		}
	}
	m.Source = expand(m.Source, home)
	if !filepath.IsAbs(m.Source) {
		return m, fmt.Sprintf("`docker run` mounts the docker volume %q, which mcpcage has no equivalent of; left as it is", m.Source)
	}
	if !filepath.IsAbs(m.Target) {
		return m, fmt.Sprintf("`docker run` mounts at %q, which is not an absolute path; left as it is", m.Target)
	}
	m.Writable = !readonly
	return m, ""
}
