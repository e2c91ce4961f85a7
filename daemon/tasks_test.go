package daemon

import (
	"fmt"
	"strings"
	"testing"
)

// The latest maxTasks entries are kept; taking one forgets it.
func TestBoundedMap(t *testing.T) {
	tests := []struct {
		name     string
		puts     int
		take     string
		want     bool
		wantSize int
	}{
		{"fewer than the bound", 10, "k3", true, 9},
		{"the oldest forgotten first", maxTasks + 5, "k4", false, maxTasks},
		{"the first kept past the bound", maxTasks + 5, "k5", true, maxTasks - 1},
		{"the latest kept", maxTasks + 5, fmt.Sprintf("k%d", maxTasks+4), true, maxTasks - 1},
	}
	for _, tt := range tests {
		var b boundedMap
		for i := range tt.puts {
			b.put(fmt.Sprintf("k%d", i), "v")
		}
		b.put("k5", "again") // an update does not grow it
		_, ok := b.take(tt.take)
		if ok != tt.want || len(b.m) != tt.wantSize || len(b.order) != tt.wantSize {
			t.Errorf("%s: take %s = %v, size %d (order %d); want %v, %d", tt.name, tt.take, ok, len(b.m), len(b.order), tt.want, tt.wantSize)
		}
	}
}

// A task's id is read under a decision's rules (found by a red-team
// review: with {"taskId":"T1","TASKID":"T2"} the result an mcp-go server
// gave of T2 was checked as T1's tool's): a tasks/* request that servers
// could read as another task is refused, and a server's task handle that
// clients could read so is withheld.
func TestTaskIDIsReadStrictly(t *testing.T) {
	d := testDaemon(t, policyConfig)
	p := testPolicy(d, "gh", "cd", false)
	for _, h := range []struct{ result, tool string }{
		{`{"task":{"taskId":"T1","status":"working"}}`, "list_benign"},
		{`{"task":{"taskId":"T2","status":"working"}}`, "get_evil"},
	} {
		if why := p.noteTask([]byte(h.result), h.tool); why != "" {
			t.Fatalf("noteTask(%s) = %q", h.result, why)
		}
	}
	requests := []struct {
		name, params string
		tool         string // the tool the request's task is credited to
		refused      bool
	}{
		{"one taskId", `{"taskId":"T2"}`, "get_evil", false},
		{"an unknown task", `{"taskId":"T9"}`, "", false},
		{"no taskId", `{}`, "", false},
		{"taskId in another case too", `{"taskId":"T1","TASKID":"T2"}`, "", true},
		{"taskId in another case only", `{"TaskId":"T2"}`, "", true},
		{"taskId twice", `{"taskId":"T1","taskId":"T2"}`, "", true},
		{"taskId escaped", `{"task\u0049d":"T2"}`, "", true},
	}
	for _, method := range []string{"tasks/result", "tasks/get", "tasks/cancel"} {
		for _, tt := range requests {
			t.Run(method+" "+tt.name, func(t *testing.T) {
				e, msg := peek(t, `{"jsonrpc":"2.0","id":9,"method":"`+method+`","params":`+tt.params+`}`)
				v := p.FromClient(e, msg)
				if v.Deny != tt.refused {
					t.Fatalf("verdict %+v (reply %s), want refused = %v", v, v.Reply, tt.refused)
				}
				if tt.refused && !strings.Contains(string(v.Reply), "ambiguous "+method) {
					t.Fatalf("reply %s does not say why", v.Reply)
				}
				if got := p.taskTool(e.ID.Of(msg)); got != tt.tool {
					t.Fatalf("the request's task is credited to %q, want %q", got, tt.tool)
				}
			})
		}
	}
	for _, tt := range []struct {
		result   string
		withheld bool
	}{
		{`{"task":{"taskId":"T3","TASKID":"T4"}}`, true},
		{`{"task":{"taskId":"T3","taskId":"T4"}}`, true},
		{`{"task":{"taskId":"T3"},"Task":{"taskId":"T4"}}`, true},
		{`{"content":[],"task_":1}`, false},
	} {
		if why := p.noteTask([]byte(tt.result), "x"); (why != "") != tt.withheld {
			t.Errorf("noteTask(%s) = %q, want withheld = %v", tt.result, why, tt.withheld)
		}
	}
	if _, ok := p.tasks.tool.m["T3"]; ok {
		t.Errorf("a task of an ambiguous handle was noted")
	}
}
