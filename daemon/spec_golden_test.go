package daemon

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/sandbox"
)

var update = flag.Bool("update", false, "rewrite testdata/spec golden files")

// TestExampleConfigSpecs compares the OCI spec of every server of every
// example config, as root would get it, with testdata/spec/<config>-<server>.json.
func TestExampleConfigSpecs(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/*.toml")
	if len(files) == 0 {
		t.Fatal("no example configs matched")
	}
	n := 0
	for _, f := range files {
		cfg, err := config.Load(f, true)
		if err != nil {
			t.Fatal(err)
		}
		d := &Daemon{
			hostView: &sandbox.HostView{Rootfs: "/var/lib/mcpcage/rootfs", Dirs: []string{"/etc", "/opt", "/usr", "/var"}},
			initPath: "/usr/libexec/mcpcage/mcpcage-init"}
		d.cfg.Store(cfg)
		for _, name := range cfg.ServerNames() {
			if cfg.Servers[name].IsRemote() {
				continue // no sandbox
			}
			n++
			t.Run(filepath.Base(f)+"/"+name, func(t *testing.T) {
				p, err := d.sandboxParams(context.Background(), "0123456789abcdef", cfg.Servers[name], Peer{UID: 0, GID: 0}, paramsOptions{})
				if err != nil {
					t.Fatal(err)
				}
				p.Landlock = sandbox.LandlockRules(p, false, nil)
				spec, err := sandbox.BuildSpec(p)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := json.MarshalIndent(spec, "", "  ")
				got = append(got, '\n')
				golden := filepath.Join("..", "testdata", "spec", strings.TrimSuffix(filepath.Base(f), ".toml")+"-"+name+".json")
				if *update {
					must(t, os.WriteFile(golden, got, 0o644))
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (go test ./daemon -update creates it)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Fatalf("%s differs (-want +got; -update if intended):\n%s", golden, diff)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("example configs define no servers")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
