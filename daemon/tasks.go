package daemon

import (
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// maxTasks bounds the tasks of one session whose tool is remembered: a
// client can create any number, and an unremembered one's result is
// still checked, only under the method's name instead of its tool's.
const maxTasks = 256

// taskTools links a task-augmented tools/call (params.task: the call is
// answered with the task's handle, its result by tasks/result) to its
// tool, so the result's checks name the tool (on_suspect's quarantine
// acts on it) as they do for a plain call's result.
type taskTools struct {
	tool map[string]string // task id -> tool
	read map[string]string // tasks/result request (id key) -> task id
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
	remember(&p.tasks.tool, id, tool)
}

// noteTaskRead remembers which task a tasks/result request (rawID,
// params) asks for.
func (p *sessionPolicy) noteTaskRead(rawID, params []byte) {
	id, ok := taskID(params)
	if !ok {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	remember(&p.tasks.read, wire.IDKey(rawID), id)
}

// remember puts k: v in *m (made when nil) while it holds fewer than
// maxTasks entries.
func remember(m *map[string]string, k, v string) {
	if *m == nil {
		*m = map[string]string{}
	}
	if len(*m) < maxTasks {
		(*m)[k] = v
	}
}

// taskTool returns the tool whose task the tasks/result request rawID
// asked for ("" when unknown), and forgets the request.
func (p *sessionPolicy) taskTool(rawID []byte) string {
	key := wire.IDKey(rawID)
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.tasks.read[key]
	delete(p.tasks.read, key)
	if !ok {
		return ""
	}
	return p.tasks.tool[id]
}
