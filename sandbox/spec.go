package sandbox

import (
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Params describe one server instance. They are plain values so the spec
// builder can be tested without a daemon.
type Params struct {
	ID       string            // container id
	Hostname string            // container host name
	Args     []string          // argv
	Env      map[string]string // extra environment
	Cwd      string
	UID, GID uint32
	Home     string // $HOME inside the container (a private tmpfs)
	// Rootfs is the skeleton directory used as the container's root.
	Rootfs string
	// Host lists the top-level host directories to bind read-only.
	Host []string
	// CgroupsPath is the task's cgroup, e.g. "/mcpcage/<id>".
	CgroupsPath string
}

// DefaultPath is $PATH for servers that do not set one.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// maskedPaths hide kernel interfaces, as container runtimes do.
var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

var readonlyPaths = []string{
	"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
}

// BuildSpec returns the OCI spec for p. It is deterministic: the same
// params give the same spec, which the golden tests rely on.
func BuildSpec(p Params) (*specs.Spec, error) {
	if len(p.Args) == 0 {
		return nil, fmt.Errorf("sandbox: empty command")
	}
	if p.Rootfs == "" || !path.IsAbs(p.Rootfs) {
		return nil, fmt.Errorf("sandbox: rootfs must be an absolute path, got %q", p.Rootfs)
	}
	if p.Home == "" {
		p.Home = "/home/mcpcage"
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: p.Hostname,
		Root:     &specs.Root{Path: p.Rootfs, Readonly: true},
		Process: &specs.Process{
			Args:            append([]string(nil), p.Args...),
			Env:             buildEnv(p),
			Cwd:             p.Cwd,
			User:            specs.User{UID: p.UID, GID: p.GID},
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 4096}},
		},
		Mounts: baseMounts(p),
		Linux: &specs.Linux{
			CgroupsPath: p.CgroupsPath,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace}, {Type: specs.CgroupNamespace},
			},
			MaskedPaths:   append([]string(nil), maskedPaths...),
			ReadonlyPaths: append([]string(nil), readonlyPaths...),
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Devices: defaultDevices(),
		},
	}
	for _, d := range s.Linux.Devices {
		major, minor := d.Major, d.Minor
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: "rwm",
		})
	}
	return s, nil
}

func buildEnv(p Params) []string {
	env := map[string]string{"PATH": DefaultPath, "HOME": p.Home, "TMPDIR": "/tmp"}
	for k, v := range p.Env {
		env[k] = v
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

func baseMounts(p Params) []specs.Mount {
	ms := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
	}
	host := append([]string(nil), p.Host...)
	sort.Strings(host)
	for _, dir := range host {
		ms = append(ms, specs.Mount{Destination: dir, Type: "bind", Source: dir,
			Options: []string{"bind", "ro", "nosuid", "nodev", "private"}})
	}
	ms = append(ms,
		specs.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "mode=755", "size=16m"}},
		specs.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777", "size=256m"}},
	)
	// The home's parents are tmpfs too, so no host directory shows through.
	for _, parent := range []string{"/home", "/root"} {
		if p.Home == parent || !strings.HasPrefix(p.Home, parent+"/") {
			ms = append(ms, specs.Mount{Destination: parent, Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "noexec", "mode=755", "size=1m"}})
		}
	}
	ms = append(ms, specs.Mount{Destination: p.Home, Type: "tmpfs", Source: "tmpfs",
		Options: []string{"nosuid", "nodev", "mode=700", "size=256m", fmt.Sprintf("uid=%d", p.UID), fmt.Sprintf("gid=%d", p.GID)}})
	return ms
}

func defaultDevices() []specs.LinuxDevice {
	mode := func(m os.FileMode) *os.FileMode { return &m }
	dev := func(path string, major, minor int64) specs.LinuxDevice {
		return specs.LinuxDevice{Path: path, Type: "c", Major: major, Minor: minor, FileMode: mode(0o666)}
	}
	return []specs.LinuxDevice{
		dev("/dev/null", 1, 3), dev("/dev/zero", 1, 5), dev("/dev/full", 1, 7),
		dev("/dev/random", 1, 8), dev("/dev/urandom", 1, 9), dev("/dev/tty", 5, 0),
	}
}
