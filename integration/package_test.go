package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// buildPackages runs `make package` for amd64 once per test binary.
func buildPackages(t *testing.T) (deb, rpm string) {
	t.Helper()
	root := repoFile(t, "")
	cmd := exec.Command("make", "package", "ARCHES=amd64")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(root, "dist", "mcpcage_*_amd64.deb"))
	rpms, _ := filepath.Glob(filepath.Join(root, "dist", "mcpcage-*.x86_64.rpm"))
	if len(debs) == 0 || len(rpms) == 0 {
		t.Fatalf("make package built no .deb or .rpm: %v %v", debs, rpms)
	}
	return newest(debs), newest(rpms)
}

func newest(paths []string) string {
	best, bestT := "", int64(0)
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.ModTime().UnixNano() > bestT {
			best, bestT = p, st.ModTime().UnixNano()
		}
	}
	return best
}

func TestPackages(t *testing.T) {
	for _, tool := range []string{"dpkg-deb", "rpm"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool)
	}
	deb, rpm := buildPackages(t)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	files := []string{"/usr/bin/mcpcaged", "/usr/bin/mcpcage", "/usr/libexec/mcpcage/mcpcage-init", "/usr/lib/systemd/system/mcpcaged.service",
		"/usr/lib/systemd/system/mcpcaged.socket", "/usr/lib/sysusers.d/mcpcage.conf", "/usr/lib/tmpfiles.d/mcpcage.conf",
		"/etc/mcpcage/config.toml", "/usr/share/mcpcage/prometheus/alerts.yml", "/usr/share/mcpcage/grafana/dashboard.json",
		"/usr/share/bash-completion/completions/mcpcage", "/usr/share/zsh/vendor-completions/_mcpcage", "/usr/share/fish/vendor_completions.d/mcpcage.fish",
		// The manual pages the units' Documentation= names, generated from the commands.
		"/usr/share/man/man8/mcpcaged.8.gz", "/usr/share/man/man1/mcpcage.1.gz", "/usr/share/man/man1/mcpcage-run.1.gz", "/usr/share/man/man1/mcpcage-grant.1.gz"}
	debList := run("dpkg-deb", "-c", deb)
	rpmList := run("rpm", "-qlp", rpm)
	for _, f := range files {
		if !strings.Contains(debList, "."+f+"\n") && !strings.Contains(debList, "."+f+" ") {
			t.Errorf(".deb lacks %s", f)
		}
		if !strings.Contains(rpmList, f+"\n") {
			t.Errorf(".rpm lacks %s", f)
		}
	}
	info := run("dpkg-deb", "-I", deb)
	for _, want := range []string{"Depends: containerd, runc", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf(".deb control lacks %q:\n%s", want, info)
		}
	}
	conffiles := run("dpkg-deb", "--ctrl-tarfile", deb)
	_ = conffiles
	ctrl := t.TempDir()
	run("dpkg-deb", "-e", deb, ctrl)
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); !strings.Contains(string(b), "/etc/mcpcage/config.toml") {
		t.Errorf("config.toml is not a conffile: %q", b)
	}
	scripts := run("rpm", "-qp", "--scripts", rpm)
	for _, want := range []string{"postinstall scriptlet", "systemctl enable mcpcaged.socket", "preuninstall scriptlet", "disable --now"} {
		if !strings.Contains(scripts, want) {
			t.Errorf(".rpm scripts lack %q:\n%s", want, scripts)
		}
	}
	if req := run("rpm", "-qp", "--requires", rpm); !strings.Contains(req, "containerd") || !strings.Contains(req, "runc") {
		t.Errorf(".rpm requires: %s", req)
	}
	// The shipped configuration is valid as it is.
	x := t.TempDir()
	run("dpkg-deb", "-x", deb, x)
	out := run(filepath.Join(x, "usr/bin/mcpcage"), "config", "check", filepath.Join(x, "etc/mcpcage/config.toml"))
	if !strings.Contains(out, "OK") {
		t.Fatalf("shipped config: %s", out)
	}
	if help := run(filepath.Join(x, "usr/bin/mcpcage"), "--help"); !strings.Contains(help, "client") || !strings.Contains(help, "grant") {
		t.Errorf("--help of the packaged binary:\n%s", help)
	}
}
