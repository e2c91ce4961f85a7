package identity

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestAgentIsTheParent(t *testing.T) {
	// The test process plays the agent: a child (the "shim") asks who
	// spawned it.
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	h := NewHasher()
	p, err := h.Agent(cmd.Process.Pid, ShimRule{})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if p.PID != os.Getpid() || p.Exe != self || len(p.SHA256) != 64 || p.UID != uint32(os.Getuid()) || p.StartTime == 0 {
		t.Fatalf("agent = %+v, want this test process (%s)", p, self)
	}
	again, err := h.Agent(cmd.Process.Pid, ShimRule{})
	if err != nil || again != p {
		t.Fatalf("second look = %+v, %v", again, err)
	}
	if !strings.Contains(p.Instance(), "@") {
		t.Fatalf("instance %q", p.Instance())
	}
}

func TestAgentOfDeadProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewHasher().Agent(cmd.Process.Pid, ShimRule{}); err == nil {
		t.Fatal("identified the parent of a process that exited")
	}
}

func TestName(t *testing.T) {
	p := Process{Exe: "/opt/Claude/claude", SHA256: "aa", UID: 1000}
	tests := []struct {
		name  string
		rules []Rule
		want  string
	}{
		{"no rules", nil, "exe:/opt/Claude/claude"},
		{"exe match", []Rule{{Name: "claude-desktop", Exe: []string{"/opt/Claude/claude"}}}, "claude-desktop"},
		{"digest mismatch", []Rule{{Name: "claude-desktop", Exe: []string{"/opt/Claude/claude"}, SHA256: []string{"bb"}}}, "exe:/opt/Claude/claude"},
		{"digest match", []Rule{{Name: "cd", Exe: []string{"/opt/Claude/claude"}, SHA256: []string{"bb", "aa"}}}, "cd"},
		{"uid mismatch", []Rule{{Name: "cd", Exe: []string{"/opt/Claude/claude"}, UIDs: []uint32{1001}}}, "exe:/opt/Claude/claude"},
		{"first match wins", []Rule{{Name: "x", Exe: []string{"/other"}}, {Name: "y", Exe: []string{"/opt/Claude/claude"}}}, "y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Name(p, tt.rules); got != tt.want {
				t.Fatalf("Name = %q, want %q", got, tt.want)
			}
		})
	}
}
