package daemon

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/renames"
)

// Deletions and attribute changes in a session's writable mounts are
// checked where the kernel acted (renames.Watcher.CheckChanges: the
// fanotify event's directory handle and name), whatever the names the
// server passed became: a symlink into a denied directory removed at
// once after an unlink or a chmod, or a name a sibling thread rewrote
// during the call, no longer escapes the check. Only truncate(2) by name
// is left to the name check (kernel.go): fanotify would report it with
// every write on the file system.

// Record types of a hit found this way (a chmod, chown, xattr or times
// change is one kind for fanotify).
const (
	fsUnlinkRecord = "file.unlink"
	fsRmdirRecord  = "file.rmdir"
	fsAttribRecord = "file.attrib"
	fsFloodRecord  = "file.flood"
)

// floodRule is the rule of a session ended for flooding the change
// checker (renames.OpFlood).
var floodRule = fmt.Sprintf("every deletion and attribute change is checked: this session's took the checker more than %v of a second to resolve, and the checker is shared (other sessions' renames would fail their checks)", renames.MaxCostPerSecond)

// onFsChanges checks the changes the watcher read of sessions' threads
// against their sessions' deny_paths, and ends a session that hit one.
func (d *Daemon) onFsChanges(changes []renames.Change) {
	for _, c := range changes {
		d.mu.Lock()
		s := d.byCgroup[c.Session]
		d.mu.Unlock()
		if s == nil {
			continue
		}
		// Contained per change: a bug on one session's change (whose path
		// its server chose) ends that session, not the others' checks
		// queued with it, nor the session whose rename check read them.
		d.forSession(s, "file change", func() { d.checkFsChange(s, c) })
	}
}

// checkFsChange checks one change of s.
func (d *Daemon) checkFsChange(s *session, c renames.Change) {
	var rule, touched string
	if c.Op == renames.OpFlood {
		rule = floodRule
	} else if c.Err != "" {
		rule = "every deletion and attribute change is checked: the directory where one was made could not be resolved (" + c.Err + ")"
	} else {
		touched = s.sandboxPath(c.Path)
		if touched == "" {
			return // not in the session's writable mounts
		}
		pat := deniedComponent(s.srv, touched)
		if pat == "" {
			return
		}
		rule = "deny_paths " + pat
	}
	if c.Op != renames.OpFlood && !threadOf(c.Tid, s.cgroupsPath) {
		// An id reused by a thread of another cgroup. Not for a flood:
		// the reader charged the session by its threads as it read them
		// (the id is only the last one's), and drops the changes of a
		// session it reported flooding: skipped, it would go on unchecked.
		return
	}
	typ := fsAttribRecord
	verb := "changed the attributes of"
	switch c.Op {
	case renames.OpDelete:
		typ, verb = fsUnlinkRecord, "removed"
		if c.Dir {
			typ = fsRmdirRecord
		}
	case renames.OpFlood:
		typ = fsFloodRecord
	}
	why := fmt.Sprintf("it %s %s, which deny_paths rule %q forbids", verb, touched, strings.TrimPrefix(rule, "deny_paths "))
	switch {
	case c.Op == renames.OpFlood:
		why = fmt.Sprintf("its file changes took the shared change checker more than %v of a second to resolve (a flood)", renames.MaxCostPerSecond)
	case c.Err != "":
		why = fmt.Sprintf("it %s a file in a directory that could not be resolved (%s), and every deletion and attribute change is checked", verb, c.Err)
	}
	s.deniedKernel.Add(1)
	if !s.killedBy.CompareAndSwap(nil, why) {
		// Ended already: its other hits (a clean-up's thousands) are
		// counted, not recorded.
		return
	}
	ke := &KernelEvent{Time: time.Now(), Type: typ, Session: s.id, Server: s.server, User: s.peer.UID, Pid: c.Tid, Path: touched, Rule: rule}
	ke.Action, _ = d.killSession(s)
	s.stopForPolicy()
	s.log.Warn("denied path: "+ke.Action, "op", typ, "path", touched, "rule", rule, "tid", c.Tid, "seen_by", "fanotify")
	d.tracers.publish(*ke)
	d.audit.Enqueue(s.kernelRecord(ke, touched), audit.Essential)
}

// threadOf reports whether thread tid is in the cgroup at cgroupPath
// (as /proc/PID/cgroup names it) or one below, or is gone (its change was made
// by a thread of the session, as the changers map says: fail closed).
func threadOf(tid uint32, cgroupPath string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", tid))
	if err != nil || cgroupPath == "" {
		return true
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		// "0::/path" (cgroup v2) or "N:controllers:/path".
		if i := bytes.LastIndexByte(line, ':'); i >= 0 && strings.HasPrefix(string(line[i+1:])+"/", cgroupPath+"/") {
			return true
		}
	}
	return false
}
