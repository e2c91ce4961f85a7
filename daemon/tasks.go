package daemon

import (
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

// taskID is the taskId member of obj (a CreateTaskResult's task, or a
// tasks/result request's params).
func taskID(obj []byte) (string, bool) {
	sp, ok := wire.Member(obj, "taskId")
	if !ok {
		return "", false
	}
	id, err := wire.String(sp.Of(obj))
	return id, err == nil && id != ""
}

// noteTask remembers the task a tools/call of tool was answered with,
// when its result is a task's handle ({"task": {"taskId": ...}}).
func (p *sessionPolicy) noteTask(result []byte, tool string) {
	sp, ok := wire.Member(result, "task")
	if !ok {
		return
	}
	id, ok := taskID(sp.Of(result))
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tasks.tool.put(id, tool)
}

// noteTaskRead remembers which task a tasks/result, tasks/get or
// tasks/cancel request (rawID, params) asks about.
func (p *sessionPolicy) noteTaskRead(rawID, params []byte) {
	id, ok := taskID(params)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tasks.read.put(wire.IDKey(rawID), id)
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
