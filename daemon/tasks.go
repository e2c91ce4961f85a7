package daemon

import (
	"errors"
	"fmt"
	"slices"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// maxTasks bounds the tasks of one session whose tool is remembered (the
// latest ones: the oldest is forgotten first): a client can create any
// number, and a forgotten one's result is still checked, only under the
// method's name instead of its tool's.
const maxTasks = 256

// taskTools links a task-augmented tools/call (params.task: the call is
// answered with the task's handle, its result by tasks/result) to its
// tool, so the result's checks name the tool (on_suspect's quarantine
// acts on it) as they do for a plain call's result.
type taskTools struct {
	tool boundedMap // task id -> tool
	read boundedMap // tasks/result request (id key) -> task id
}

// boundedMap holds the latest maxTasks entries.
type boundedMap struct {
	m     map[string]string
	order []string // keys, oldest first
}

// put sets k: v, forgetting the oldest entry when full.
func (b *boundedMap) put(k, v string) {
	if b.m == nil {
		b.m = map[string]string{}
	}
	if _, ok := b.m[k]; !ok {
		if len(b.order) == maxTasks {
			delete(b.m, b.order[0])
			b.order = b.order[1:]
		}
		b.order = append(b.order, k)
	}
	b.m[k] = v
}

// take returns k's value and forgets it.
func (b *boundedMap) take(k string) (string, bool) {
	v, ok := b.m[k]
	if ok {
		delete(b.m, k)
		if i := slices.Index(b.order, k); i >= 0 {
			b.order = slices.Delete(b.order, i, i+1)
		}
	}
	return v, ok
}

// taskID reads the taskId member of obj (a CreateTaskResult's task, or a
// tasks/* request's params) under a decision's rules (wire.StrictMember):
// found by a red-team review, {"taskId":"T1","TASKID":"T2"} was read as
// T1 here and as T2 by an mcp-go server, so T2's result was checked as
// T1's tool's. ok is false when obj has no taskId that is a non-empty
// string; err is an ambiguity.
func taskID(obj []byte) (id string, ok bool, err error) {
	sp, found, err := wire.StrictMember(obj, "taskId")
	if errors.Is(err, wire.ErrAmbiguous) {
		return "", false, fmt.Errorf("taskId: %w", err)
	}
	if err != nil || !found {
		return "", false, nil
	}
	id, err = wire.String(sp.Of(obj))
	if errors.Is(err, wire.ErrAmbiguous) {
		return "", false, fmt.Errorf("taskId: %w", err)
	}
	return id, err == nil && id != "", nil
}

// noteTask remembers the task a tools/call of tool was answered with,
// when its result is a task's handle ({"task": {"taskId": ...}}). It
// returns why the result must be withheld: a handle the client could read
// as another task than mcpcage does, whose result would then be checked
// without its tool.
func (p *sessionPolicy) noteTask(result []byte, tool string) string {
	sp, ok, err := wire.StrictMember(result, "task")
	if err == nil && ok {
		var id string
		if id, ok, err = taskID(sp.Of(result)); ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.tasks.tool.put(id, tool)
		}
	}
	if errors.Is(err, wire.ErrAmbiguous) {
		return "its task handle is ambiguous (clients could read it as different tasks): " + err.Error()
	}
	return ""
}

// noteTaskRead remembers which task a tasks/result, tasks/get or
// tasks/cancel request (rawID, params) asks about. An error is an
// ambiguous taskId: the request must be refused.
func (p *sessionPolicy) noteTaskRead(rawID, params []byte) error {
	id, ok, err := taskID(params)
	if !ok {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tasks.read.put(wire.IDKey(rawID), id)
	return nil
}

// taskTool returns the tool whose task the request rawID (tasks/result,
// tasks/get, tasks/cancel) asked about ("" when unknown), and forgets the
// request.
func (p *sessionPolicy) taskTool(rawID []byte) string {
	key := wire.IDKey(rawID)
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.tasks.read.take(key)
	if !ok {
		return ""
	}
	return p.tasks.tool.m[id]
}
