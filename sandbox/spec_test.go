package sandbox

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/spec")

// goldenParams are fixed inputs: the same on every machine.
var goldenParams = map[string]Params{
	"everything": {
		ID: "mcpcage-0123456789abcdef", Hostname: "mcpcage-everything",
		Args: []string{"mcp-server-everything", "stdio"}, Env: map[string]string{"FOO": "bar"},
		Cwd: "/", UID: 65534, GID: 65534, Home: "/home/nobody",
		Rootfs: "/var/lib/mcpcage/rootfs", Host: []string{"/usr", "/etc", "/opt", "/var"},
		CgroupsPath: "/mcpcage/mcpcage-0123456789abcdef",
		MemoryBytes: 1 << 30, Pids: 256, CPUs: 1.5,
		Mounts: []BindMount{{Source: "/home/alice/project", Target: "/work", Writable: true}, {Source: "/srv/data", Target: "/data"}},
		Hidden: []string{"/home/alice"}, Readonly: []string{"/work/.git"},
		Seccomp: SeccompOptions{Mode: "default", ListenerPath: "/var/lib/mcpcage/seccomp.sock", Metadata: "0123456789abcdef"},
		Init:    "/usr/libexec/mcpcage/mcpcage-init",
	},
	"user-home-under-root": {
		ID: "mcpcage-fedcba9876543210", Hostname: "mcpcage-test",
		Args: []string{"/opt/server"}, UID: 0, GID: 0, Home: "/root",
		Rootfs: "/var/lib/mcpcage/rootfs", Host: []string{"/usr"},
		HostNetwork: true, Seccomp: SeccompOptions{Mode: "unconfined"},
	},
}

func TestSpecGolden(t *testing.T) {
	ev := goldenParams["everything"]
	ev.Landlock = LandlockRules(ev, false, nil)
	goldenParams["everything"] = ev
	for name, p := range goldenParams {
		t.Run(name, func(t *testing.T) {
			s, err := BuildSpec(p)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.MarshalIndent(s, "", "  ")
			got = append(got, '\n')
			path := filepath.Join("..", "testdata", "spec", name+".json")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./sandbox -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Fatalf("spec differs from %s (-want +got; rerun with -update if intended):\n%s", path, diff)
			}
		})
	}
}

func TestSpecInvariants(t *testing.T) {
	s, err := BuildSpec(goldenParams["everything"])
	if err != nil {
		t.Fatal(err)
	}
	if !s.Root.Readonly || !s.Process.NoNewPrivileges {
		t.Fatal("root must be read-only and no_new_privileges set")
	}
	c := s.Process.Capabilities
	if len(c.Bounding)+len(c.Effective)+len(c.Permitted)+len(c.Inheritable)+len(c.Ambient) != 0 {
		t.Fatalf("capabilities granted: %+v", c)
	}
	for _, m := range s.Mounts {
		if m.Type == "bind" {
			opts := strings.Join(m.Options, ",")
			if m.Destination == "/work" { // the one writable mount of the fixture
				if !strings.Contains(opts, "rw") || !strings.Contains(opts, "nosuid") {
					t.Errorf("writable mount has options %s", opts)
				}
				continue
			}
			if !strings.Contains(opts, "ro") || !strings.Contains(opts, "nosuid") || strings.Contains(opts, "rbind") {
				t.Errorf("bind mount %s has options %s: want ro, nosuid and not recursive", m.Destination, opts)
			}
		}
		for _, secret := range []string{"/home", "/root", "/run", "/tmp"} {
			if m.Destination == secret && m.Type != "tmpfs" {
				t.Errorf("%s comes from the host (%s), want a private tmpfs", secret, m.Type)
			}
		}
	}
	if _, err := BuildSpec(Params{Rootfs: "/x"}); err == nil {
		t.Error("empty command accepted")
	}
	if _, err := BuildSpec(Params{Args: []string{"x"}, Rootfs: "rel"}); err == nil {
		t.Error("relative rootfs accepted")
	}
}

func TestPrepareHostView(t *testing.T) {
	host := t.TempDir()
	for _, d := range []string{"usr", "etc", "home", "root", "proc", "work"} {
		if err := os.MkdirAll(filepath.Join(host, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(
		os.Symlink("usr/bin", filepath.Join(host, "bin")),
		os.WriteFile(filepath.Join(host, "vmlinuz"), nil, 0o644),
	); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "rootfs")
	// What sandboxes of an earlier version left in the skeleton, which
	// they ran in: mount targets runc made, a file mount's target.
	if err := errors.Join(
		os.MkdirAll(filepath.Join(dir, "projects", "acme"), 0o755),
		os.MkdirAll(filepath.Join(dir, ".mcpcage"), 0o755),
		os.WriteFile(filepath.Join(dir, ".mcpcage", "init"), nil, 0o644),
	); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // idempotent
		hv, err := PrepareHostView(dir, host)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"/etc", "/usr", "/work"}, hv.Dirs); diff != "" {
			t.Fatalf("shared dirs (-want +got):\n%s", diff)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "bin")); err != nil || l != "usr/bin" {
		t.Fatalf("bin symlink = %q, %v", l, err)
	}
	for _, mp := range []string{"home", "root", "proc", "tmp", "run", "dev", "sys"} {
		if st, err := os.Stat(filepath.Join(dir, mp)); err != nil || !st.IsDir() {
			t.Errorf("mount point /%s missing in skeleton", mp)
		}
	}
	var names []string
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{"bin", "dev", "etc", "home", "proc", "root", "run", "sys", "tmp", "usr", "work"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("skeleton entries (-want +got): the host's directories and symlinks and the spec's mount points, nothing else:\n%s", diff)
	}
}

func TestSeccompProfile(t *testing.T) {
	p, err := Seccomp(SeccompOptions{Mode: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultAction != "SCMP_ACT_ERRNO" || p.DefaultErrnoRet == nil || *p.DefaultErrnoRet != 1 {
		t.Fatalf("default action %s/%v, want ERRNO EPERM", p.DefaultAction, p.DefaultErrnoRet)
	}
	allowed := map[string]bool{}
	for _, sc := range p.Syscalls {
		if sc.Action == "SCMP_ACT_ALLOW" && len(sc.Args) == 0 {
			for _, n := range sc.Names {
				allowed[n] = true
			}
		}
	}
	for _, denied := range []string{"io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2",
		"ptrace", "bpf", "perf_event_open", "keyctl", "add_key", "kexec_load", "init_module", "finit_module",
		"unshare", "setns", "clone", "clone3", "pivot_root", "open_by_handle_at", "process_vm_readv",
		"chmod", "fchmod", "fchmodat", "fchmodat2", "open", "openat", "openat2", "creat", "mknod", "mknodat"} {
		if allowed[denied] {
			t.Errorf("%s is allowed unconditionally", denied)
		}
	}
	for _, needed := range []string{"read", "write", "execve", "mmap", "futex", "epoll_wait", "connect", "statx"} {
		if !allowed[needed] {
			t.Errorf("%s is not allowed", needed)
		}
	}
	if p, _ := Seccomp(SeccompOptions{Mode: "unconfined"}); p != nil {
		t.Error("unconfined produced a profile")
	}
	dir := t.TempDir()
	if err := errors.Join(
		os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o644),
		os.WriteFile(filepath.Join(dir, "ok.json"), []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644),
	); err != nil {
		t.Fatal(err)
	}
	if _, err := Seccomp(SeccompOptions{Mode: filepath.Join(dir, "bad.json")}); err == nil {
		t.Error("malformed profile accepted")
	}
	if p, err := Seccomp(SeccompOptions{Mode: filepath.Join(dir, "ok.json")}); err != nil || p.DefaultAction != "SCMP_ACT_ALLOW" {
		t.Errorf("custom profile: %v %v", p, err)
	}
}

// Every profile mcpcage hands to runc admits the native architecture
// only: the kernel's syscall tracepoints skip 32-bit system calls, so
// admitting them would let a server open files unseen by deny_paths'
// kernel check. A custom profile's own list is replaced.
func TestSeccompNativeArchitectureOnly(t *testing.T) {
	dir := t.TempDir()
	docker := filepath.Join(dir, "docker.json")
	if err := os.WriteFile(docker, []byte(`{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32","SCMP_ARCH_AARCH64","SCMP_ARCH_ARM"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	native := map[string]specs.Arch{"amd64": specs.ArchX86_64, "arm64": specs.ArchAARCH64}[runtime.GOARCH]
	if native == "" {
		t.Fatalf("mcpcage builds for amd64 and arm64, not %s", runtime.GOARCH)
	}
	for _, tc := range []struct{ name, mode string }{
		{"default profile", "default"},
		{"custom profile listing the 32-bit architectures", docker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Seccomp(SeccompOptions{Mode: tc.mode})
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Architectures) != 1 || p.Architectures[0] != native {
				t.Fatalf("architectures %v, want only %s", p.Architectures, native)
			}
		})
	}
}

// Every call that sets a file's mode is allowed only without S_ISUID and
// S_ISGID (or, for the open calls, without a creating flag), and reported
// with either bit.
func TestSeccompSetIDRules(t *testing.T) {
	p, err := Seccomp(SeccompOptions{ListenerPath: "/run/x.sock"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range modeCalls {
		t.Run(c.name, func(t *testing.T) {
			var allows, reports []specs.LinuxSyscall
			for _, sc := range p.Syscalls {
				if !slices.Contains(sc.Names, c.name) {
					continue
				}
				switch sc.Action {
				case specs.ActAllow:
					allows = append(allows, sc)
				case specs.ActNotify:
					reports = append(reports, sc)
				default:
					t.Fatalf("rule %+v", sc)
				}
			}
			for _, a := range allows {
				if len(a.Args) != 1 {
					t.Fatalf("allow rule %+v: want one condition", a)
				}
				if arg := a.Args[0]; !(arg.Index == uint(c.mode) && arg.Value == setIDBits || arg.Index == uint(c.flags) && arg.Value == createFlags) || arg.ValueTwo != 0 {
					t.Fatalf("allow rule %+v: want the mode without set-ID bits, or no creating flag", a)
				}
			}
			want := 3
			if c.flags >= 0 {
				want = 9
			}
			if len(allows) == 0 || len(reports) != want {
				t.Fatalf("%d allow and %d reporting rules, want some and %d", len(allows), len(reports), want)
			}
		})
	}
}
