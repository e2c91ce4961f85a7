package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/mcpcage/mcpcage/sandbox/landlock"
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

	// Mounts are extra binds from the host (sources already resolved).
	Mounts []BindMount
	// Hidden paths are masked (absent or empty); Readonly paths are made
	// read-only, both inside the sandbox.
	Hidden, Readonly []string
	// DenyNames are the deny_paths components (".ssh"): entries of that
	// name found under the mount sources are masked too (see ScanDenied
	// for the bounds), so the kernel's check is the second line for
	// them, not the only one.
	DenyNames []string
	// Denied, when set, is the search for DenyNames already done (the
	// session reports what it could not search); nil: BuildSpec searches.
	Denied *DenyScan
	// Limits.
	MemoryBytes int64
	Pids        int64
	CPUs        float64
	// HostNetwork joins the host's network namespace; otherwise the
	// sandbox has its own with loopback only.
	HostNetwork bool
	Seccomp     SeccompOptions
	// Init is the host path of mcpcage-init; empty runs the command
	// directly (no Landlock, stdio through containerd).
	Init string
	// StdioDir, with Init, is the host directory of the server's stdin
	// and stdout FIFOs (see ServerStdio): mcpcage-init opens them as fds
	// 0 and 1 before it execs the server.
	StdioDir string
	// Landlock are the rules mcpcage-init applies; RequireLandlock makes
	// a kernel without Landlock a launch error.
	Landlock        *landlock.Rules
	RequireLandlock bool
}

// BindMount is a host path made visible in the sandbox.
type BindMount struct {
	Source, Target string
	Writable       bool
	// Viewer, when set, is the user who chose Source and whose uid and
	// gid the server runs with: the deny_paths search skips what they
	// cannot reach (see scanMountAs).
	Viewer *Cred
	// Pin, when set, is the object Source was checked on: the launch
	// fails unless the sandbox shows this very object (device and inode)
	// at Target. The spec ignores it.
	Pin *os.File
}

// ImageRootfs is the root path of a sandbox whose root is an image's
// snapshot (containerd mounts it there).
const ImageRootfs = "rootfs"

// InitTarget is where mcpcage-init appears inside the sandbox.
const InitTarget = "/.mcpcage/init"

// StdioTarget is where the server's stdio FIFOs appear inside the sandbox
// until mcpcage-init has opened them.
const StdioTarget = "/.mcpcage/stdio"

// AlwaysHidden are host paths no server may see, whatever its command.
var AlwaysHidden = []string{
	"/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/ssh", "/etc/sudoers",
	"/etc/sudoers.d", "/var/lib/containerd", "/var/lib/docker", "/var/run/docker.sock",
	"/var/log/mcpcage", "/var/lib/mcpcage",
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
	if p.Rootfs != ImageRootfs && (p.Rootfs == "" || !path.IsAbs(p.Rootfs)) {
		return nil, fmt.Errorf("sandbox: rootfs must be an absolute path or %q, got %q", ImageRootfs, p.Rootfs)
	}
	if p.Home == "" {
		p.Home = "/home/mcpcage"
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	seccomp, err := Seccomp(p.Seccomp)
	if err != nil {
		return nil, err
	}
	args := append([]string(nil), p.Args...)
	if p.Init != "" {
		flags := []string{InitTarget}
		if p.RequireLandlock {
			flags = append(flags, "--require")
		}
		if p.StdioDir != "" {
			flags = append(flags, "--stdio", StdioTarget)
		}
		args = append(append(flags, "--"), args...)
	}
	env := buildEnv(p)
	if p.Init != "" && p.Landlock != nil {
		b, err := json.Marshal(p.Landlock)
		if err != nil {
			return nil, err
		}
		env = append(env, "MCPCAGE_LANDLOCK="+string(b))
	}
	denied := p.DenyScan()
	s := &specs.Spec{
		Version:  specs.Version,
		Hostname: p.Hostname,
		Root:     &specs.Root{Path: p.Rootfs, Readonly: true},
		Process: &specs.Process{
			Args:            args,
			Env:             env,
			Cwd:             p.Cwd,
			User:            specs.User{UID: p.UID, GID: p.GID},
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 4096}},
		},
		Mounts: baseMounts(p),
		Linux: &specs.Linux{
			CgroupsPath:   p.CgroupsPath,
			Namespaces:    linuxNamespaces(p.HostNetwork),
			MaskedPaths:   sortedUnion(maskedPaths, AlwaysHidden, p.Hidden, denied.Masks),
			ReadonlyPaths: sortedUnion(readonlyPaths, p.Readonly),
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
			},
			Devices: defaultDevices(),
			Seccomp: seccomp,
		},
	}
	if len(denied.Incomplete) > 0 {
		b, err := json.Marshal(denied.Incomplete)
		if err != nil {
			return nil, fmt.Errorf("encode incomplete deny_paths search: %w", err)
		}
		s.Annotations = map[string]string{AnnotationDenyScanIncomplete: string(b)}
	}
	r := s.Linux.Resources
	if p.MemoryBytes > 0 {
		limit := p.MemoryBytes
		r.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit} // no swap beyond the limit
	}
	if p.Pids > 0 {
		pids := p.Pids
		r.Pids = &specs.LinuxPids{Limit: &pids}
	}
	if p.CPUs > 0 {
		period := uint64(100000)
		quota := int64(p.CPUs * float64(period))
		// The CFS burst (one period's quota) is not in the spec: runc 1.2
		// fails the container where the kernel lacks cpu.max.burst (before
		// 5.14); the launcher sets it where it exists (cpuBurst).
		r.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
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
	if p.Init != "" {
		ms = append(ms, specs.Mount{Destination: InitTarget, Type: "bind", Source: p.Init,
			Options: []string{"bind", "ro", "nosuid", "nodev", "private"}})
		if p.StdioDir != "" {
			// Read-only: opening a FIFO for writing needs no write access
			// to its file system.
			ms = append(ms, specs.Mount{Destination: StdioTarget, Type: "bind", Source: p.StdioDir,
				Options: []string{"bind", "ro", "nosuid", "nodev", "noexec", "private"}})
		}
	}
	for _, m := range p.Mounts {
		mode := "ro"
		if m.Writable {
			mode = "rw"
		}
		ms = append(ms, specs.Mount{Destination: m.Target, Type: "bind", Source: m.Source,
			Options: []string{"bind", mode, "nosuid", "nodev", "private"}})
	}
	return ms
}

func linuxNamespaces(hostNetwork bool) []specs.LinuxNamespace {
	ns := []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		{Type: specs.MountNamespace}, {Type: specs.CgroupNamespace},
	}
	if !hostNetwork {
		ns = append(ns, specs.LinuxNamespace{Type: specs.NetworkNamespace})
	}
	return ns
}

// DenyScan is p.Denied, or the search for p.DenyNames under p's mounts
// now.
func (p Params) DenyScan() DenyScan {
	if p.Denied != nil {
		return *p.Denied
	}
	return ScanDenied(p.Mounts, p.DenyNames)
}

func sortedUnion(lists ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lists {
		for _, p := range l {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	sort.Strings(out)
	return out
}

// LandlockRules derives the write rules for a sandbox: its private /tmp,
// home and /dev/shm, its writable mounts, and the device nodes. The
// sandbox is scoped (Landlock ABI 6+): abstract unix sockets and signals
// outside it are out of reach.
func LandlockRules(p Params, restrictConnect bool, ports []uint16) *landlock.Rules {
	w := []string{"/tmp", p.Home, "/dev/shm"}
	for _, m := range p.Mounts {
		if m.Writable {
			w = append(w, m.Target)
		}
	}
	return &landlock.Rules{
		Writable:        w,
		Devices:         []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts", "/dev/ptmx"},
		RestrictConnect: restrictConnect,
		ConnectPorts:    ports,
		Scope:           true,
	}
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
