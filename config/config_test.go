package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"unknown daemon key", "[daemon]\nsocket = \"/run/x.sock\"\nsokcet = \"/x\"\n", []string{"line 3", "daemon.sokcet", "unknown key", `did you mean "socket"`}},
		{"unknown server key", "[servers.a]\ncommand = [\"x\"]\n\ncomand = [\"y\"]\n", []string{"line 4", "servers.a.comand", "unknown key"}},
		{"unknown top table", "[deamon]\nsocket = \"/x\"\n", []string{"line 1", "deamon", "unknown key"}},
		{"wrong type", "[daemon]\n\nsocket = 5\n", []string{"line 3", "daemon.socket"}},
		{"wrong type in server", "[servers.a]\ncommand = \"node x.js\"\n", []string{"line 2", "servers.a.command"}},
		{"relative socket", "[daemon]\nsocket = \"run/x.sock\"\n", []string{"line 2", "daemon.socket", "absolute path"}},
		{"bad size", "[daemon]\nmax_message_bytes = \"lots\"\n", []string{"line 2", "max_message_bytes", "invalid size"}},
		{"size too small", "[daemon]\nmax_message_bytes = 10\n", []string{"line 2", "max_message_bytes", "between"}},
		{"bad duration", "[daemon]\nstop_timeout = \"soon\"\n", []string{"line 2", "stop_timeout", "invalid duration"}},
		{"pin dir outside the BPF file system", "[daemon]\nbpf_pin_dir = \"/var/lib/mcpcage\"\n", []string{"line 2", "daemon.bpf_pin_dir", "below /sys/fs/bpf"}},
		{"pin dir the BPF file system itself", "[daemon]\nbpf_pin_dir = \"/sys/fs/bpf/\"\n", []string{"line 2", "daemon.bpf_pin_dir"}},
		{"pin dir not clean", "[daemon]\nbpf_pin_dir = \"/sys/fs/bpf/../../etc\"\n", []string{"line 2", "daemon.bpf_pin_dir", "clean absolute path"}},
		{"namespace the pin dir's parent", "[daemon]\ncontainerd_namespace = \"..\"\n", []string{"line 2", "daemon.containerd_namespace", "plain name"}},
		{"namespace the pin dir", "[daemon]\ncontainerd_namespace = \".\"\n", []string{"line 2", "daemon.containerd_namespace", "plain name"}},
		{"no sessions per user", "[daemon]\nmax_sessions_per_user = 0\n", []string{"line 2", "daemon.max_sessions_per_user", "between 1 and 512"}},
		{"admin group is the socket's", "[daemon]\nadmin_group = \"mcpcage\"\n", []string{"line 2", "daemon.admin_group", "every user of mcpcage", "administrators only"}},
		{"consents by nobody", "[daemon]\nconsents_by = \"agent\"\n", []string{"line 2", "daemon.consents_by", `"user" or "admin"`}},
		{"egress budget too small", "[daemon]\negress_entries_per_user = 8\n", []string{"line 2", "daemon.egress_entries_per_user", "between 16 and 65536"}},
		{"egress list too long", "[servers.a]\ncommand = [\"x\"]\nnetwork = \"host\"\negress = [" + strings.Repeat(`"10.0.0.1:443", `, 1025) + "]\n", []string{"line 4", "servers.a.egress", "1025 entries, at most 1024"}},
		{"observer linger too long", "[daemon]\nobserver_linger = \"1h\"\n", []string{"line 2", "daemon.observer_linger", "between 0 (detach at once) and 10m"}},
		{"negative observer linger", "[daemon]\nobserver_linger = \"-1s\"\n", []string{"daemon.observer_linger"}},
		{"bad log level", "[daemon]\nlog_level = \"loud\"\n", []string{"line 2", "log_level"}},
		{"cpus not a number", "[servers.a]\ncommand = [\"x\"]\ncpus = nan\n", []string{"servers.a.cpus", "between 0.01 and 1024"}},
		{"cpus infinite", "[servers.a]\ncommand = [\"x\"]\ncpus = inf\n", []string{"servers.a.cpus", "between 0.01 and 1024"}},
		{"missing command", "[servers.a]\nworkdir = \"/\"\n", []string{"line 1", "servers.a.command", "is required"}},
		{"bad server name", "[servers.\"a b\"]\ncommand = [\"x\"]\n", []string{"line 1", "servers.\"a b\"", "server names"}},
		{"relative workdir", "[servers.a]\ncommand = [\"x\"]\nworkdir = \"tmp\"\n", []string{"line 3", "servers.a.workdir"}},
		{"bad env name", "[servers.a]\ncommand = [\"x\"]\nenv = { \"A=B\" = \"c\" }\n", []string{"line 3", "servers.a.env"}},
		{"syntax", "[daemon\nsocket = 1\n", []string{"line ", "table name"}},
		{"relative script", "[agents.a]\nexe = [\"/usr/bin/node\"]\nscript = [\"agent.js\"]\n", []string{"agents.a.script", "absolute paths"}},
		{"script digest without script", "[agents.a]\nexe = [\"/usr/bin/node\"]\nscript_sha256 = [\"" + strings.Repeat("a", 64) + "\"]\n", []string{"agents.a.script_sha256", "needs script"}},
		{"bad dns server", "[daemon]\ndns_servers = [\"127.0.0.53:53\", \"resolver.example\"]\n", []string{"line 2", "daemon.dns_servers", `"resolver.example" is not an IP address with a port`}},
		{"bad private domain", "[daemon]\nprivate_domains = [\"corp.example.\", \"*.corp.example\"]\n", []string{"line 2", "daemon.private_domains", `"*.corp.example" is not a domain name`}},
		{"listen host name", "[servers.a]\ncommand = [\"x\"]\nnetwork = \"host\"\nlisten = [\"localhost:8080\"]\n", []string{"line 4", "servers.a.listen", "IP literal"}},
		{"listen port 0", "[servers.a]\ncommand = [\"x\"]\nnetwork = \"host\"\nlisten = [\"127.0.0.1:0\"]\n", []string{"servers.a.listen", "port 0"}},
		{"listen without host network", "[servers.a]\ncommand = [\"x\"]\nlisten = [\"127.0.0.1:8080\"]\n", []string{"servers.a.listen", `network = "host"`}},
		{"two errors", "[daemon]\nfoo = 1\nbar = 2\n", []string{"line 2", "daemon.foo", "line 3", "daemon.bar"}},
		{"bad label", "[servers.a]\ncommand = [\"x\"]\nlabels = [\"Top Secret\"]\n", []string{"servers.a.labels", `label "Top Secret"`}},
		{"bad on_suspect", "[servers.a]\ncommand = [\"x\"]\non_suspect = \"panic\"\n", []string{"servers.a.on_suspect", "quarantine-tool"}},
		{"flow to an unknown label", "[servers.a]\ncommand = [\"x\"]\nlabels = [\"confidential\"]\n[[flow]]\nfrom = \"confidential\"\nto = \"externl\"\naction = \"deny\"\n", []string{"flow[0]", "to", `no server has the label "externl"`}},
		{"flow bad action", "[servers.a]\ncommand = [\"x\"]\nlabels = [\"c\", \"e\"]\n[[flow]]\nfrom = \"c\"\nto = \"e\"\naction = \"block\"\n", []string{"flow[0]", "action", `"deny", "ask", "redact" or "log"`}},
		{"flow bad when", "[servers.a]\ncommand = [\"x\"]\nlabels = [\"c\", \"e\"]\n[[flow]]\nfrom = \"c\"\nto = \"e\"\naction = \"log\"\nwhen = \"always\"\n", []string{"flow[0]", "when"}},
		{"detector bad regexp", "[[detector]]\nname = \"emp\"\npattern = \"EMP-[0-9\"\n", []string{"detector[0]", "pattern", "RE2"}},
		{"detector matches empty", "[[detector]]\nname = \"emp\"\npattern = \"x*\"\n", []string{"detector[0]", "empty string"}},
		{"detector matches at a boundary", "[[detector]]\nname = \"emp\"\npattern = \"\\\\b\"\n", []string{"detector[0]", "empty string"}},
		{"detector twice", "[[detector]]\nname = \"emp\"\npattern = \"E1\"\n[[detector]]\nname = \"emp\"\npattern = \"E2\"\n", []string{"detector[1]", "defined twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseValid(t *testing.T) {
	doc := `
[daemon]
socket = "/tmp/m.sock"   # comment
max_message_bytes = "32MiB"
stop_timeout = "500ms"

[servers.everything]
command = ["node", "/x/index.js", "stdio"]
env = { FOO = "bar" }
`
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Daemon.Socket != "/tmp/m.sock" || cfg.Daemon.MaxMessageBytes != 32<<20 || time.Duration(cfg.Daemon.StopTimeout) != 500*time.Millisecond {
		t.Fatalf("daemon = %+v", cfg.Daemon)
	}
	if cfg.Daemon.StateDir != "/var/lib/mcpcage" {
		t.Fatalf("default state_dir not kept: %q", cfg.Daemon.StateDir)
	}
	s := cfg.Servers["everything"]
	if s == nil || s.Name != "everything" || s.Workdir != "/" || s.Env["FOO"] != "bar" || len(s.Command) != 3 {
		t.Fatalf("server = %+v", s)
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.toml")
	cfg, err := Load(missing, false)
	if err != nil || cfg.Daemon.Socket != Default().Daemon.Socket {
		t.Fatalf("Load(missing, optional) = %+v, %v; want defaults", cfg, err)
	}
	if _, err := Load(missing, true); err == nil {
		t.Fatal("Load(missing, required) succeeded")
	}
}

func TestExampleConfigsAreValid(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/*.toml")
	if len(files) == 0 {
		t.Fatal("no example configs matched ../testdata/config/*.toml")
	}
	for _, f := range files {
		if _, err := Load(f, true); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestResolvePath(t *testing.T) {
	t.Setenv(EnvPath, "")
	if p, explicit := ResolvePath(""); p != DefaultPath || explicit {
		t.Fatalf("default = %q %v", p, explicit)
	}
	t.Setenv(EnvPath, "/env.toml")
	if p, explicit := ResolvePath(""); p != "/env.toml" || !explicit {
		t.Fatalf("env = %q %v", p, explicit)
	}
	if p, _ := ResolvePath("/flag.toml"); p != "/flag.toml" {
		t.Fatalf("flag = %q", p)
	}
}

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"64MiB", 64 << 20, true}, {"1GiB", 1 << 30, true}, {"10KB", 10000, true}, {"123", 123, true},
		{"1 MiB", 1 << 20, true}, {"-1", 0, false}, {"MiB", 0, false}, {"1.5MiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("ParseByteSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestListenAddrs(t *testing.T) {
	c, err := Parse([]byte("[servers.a]\ncommand = [\"x\"]\nnetwork = \"host\"\nlisten = [\"127.0.0.1:8080\", \"[::1]:8080\", \"[::ffff:10.0.0.1]:53\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Servers["a"].ListenAddrs())
	if want := "[127.0.0.1:8080 [::1]:8080 10.0.0.1:53]"; got != want {
		t.Fatalf("ListenAddrs = %s, want %s", got, want)
	}
}

func TestUserRemoteHostAllowed(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		host     string
		want     bool
	}{
		{[]string{"*"}, "mcp.example.com", true},
		{[]string{"*"}, "127.0.0.1:8443", true},
		{nil, "mcp.example.com", false},
		{[]string{"*.example.com"}, "mcp.example.com", true},
		{[]string{"*.example.com"}, "mcp.example.com:8443", true},
		{[]string{"*.example.com"}, "example.org", false},
		{[]string{"127.0.0.1:8443"}, "127.0.0.1:8443", true},
		{[]string{"127.0.0.1:8443"}, "127.0.0.1:9000", false},
		{[]string{"MCP.Example.com"}, "mcp.example.COM", true},
	} {
		d := Daemon{UserRemoteHosts: tc.patterns}
		if got := d.UserRemoteHostAllowed(tc.host); got != tc.want {
			t.Errorf("%q allows %q = %v, want %v", tc.patterns, tc.host, got, tc.want)
		}
	}
}

func TestUserImageAllowed(t *testing.T) {
	for _, tc := range []struct {
		patterns []string
		image    string
		want     bool
	}{
		{nil, "ghcr.io/github/github-mcp-server:latest", false},
		{[]string{"*"}, "ghcr.io/github/github-mcp-server:latest", true},
		{[]string{"ghcr.io/github/*"}, "ghcr.io/github/github-mcp-server:latest", true},
		{[]string{"ghcr.io/github/*"}, "ghcr.io/github/sub/image:1", false},
		{[]string{"ghcr.io/github/*"}, "ghcr.io/githubx/image:1", false},
		{[]string{"docker.io/mcp/fetch:*"}, "docker.io/mcp/fetch:latest", true},
		{[]string{"docker.io/mcp/fetch:*"}, "docker.io/mcp/fetchx:latest", false},
	} {
		d := Daemon{UserImages: tc.patterns}
		if got := d.UserImageAllowed(tc.image); got != tc.want {
			t.Errorf("%q allows %q = %v, want %v", tc.patterns, tc.image, got, tc.want)
		}
	}
}

func TestServerProcessKeys(t *testing.T) {
	for _, tc := range []struct {
		name, toml, wantErr string
	}{
		{"command", `command = ["srv"]`, ""},
		{"image alone runs its entrypoint", `image = "docker.io/x/y:1"`, ""},
		{"image with args", "image = \"docker.io/x/y:1\"\nargs = [\"stdio\"]", ""},
		{"image with command", "image = \"docker.io/x/y:1\"\ncommand = [\"/bin/srv\"]", ""},
		{"neither", `workdir = "/"`, "servers.s.command: is required"},
		{"args without image", "command = [\"srv\"]\nargs = [\"x\"]", "servers.s.args: applies to an image's entrypoint only"},
		{"args and command", "image = \"docker.io/x/y:1\"\ncommand = [\"srv\"]\nargs = [\"x\"]", "set one of them"},
		{"empty argv0", `command = [""]`, "must not start with an empty string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("[servers.s]\n" + tc.toml + "\n"))
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
