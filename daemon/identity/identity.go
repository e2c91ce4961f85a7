// Package identity works out who is behind a shim connection, from the
// kernel, never from the client's word: the delegating user is the
// socket's peer uid; the agent is the process that spawned the shim
// (its parent), identified by its resolved executable, the SHA-256 of that
// executable, its uid and its start time. A pidfd pins the processes while
// they are examined, and start times are compared before and after, so a
// recycled pid cannot impersonate an agent.
package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Process is one examined process.
type Process struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks since boot (/proc/PID/stat field 22)
	UID       uint32 `json:"uid"`
	Exe       string `json:"exe"`
	SHA256    string `json:"sha256"`
}

// Instance names a running process uniquely: pid@start_time.
func (p Process) Instance() string { return fmt.Sprintf("%d@%d", p.PID, p.StartTime) }

// ErrGone is returned when a process exits (or its pid is reused) while
// it is being examined.
var ErrGone = errors.New("process went away while being identified")

// Agent returns the parent of shimPID: the agent that spawned the shim.
func (h *Hasher) Agent(shimPID int) (Process, error) {
	shimFD, err := unix.PidfdOpen(shimPID, 0)
	if err != nil {
		return Process{}, fmt.Errorf("pidfd of shim %d: %w", shimPID, err)
	}
	defer unix.Close(shimFD)
	ppid, _, err := stat(shimPID)
	if err != nil {
		return Process{}, err
	}
	if ppid <= 1 {
		return Process{}, fmt.Errorf("shim %d has no parent process (it was orphaned)", shimPID)
	}
	fd, err := unix.PidfdOpen(ppid, 0)
	if err != nil {
		return Process{}, fmt.Errorf("pidfd of agent %d: %w", ppid, err)
	}
	defer unix.Close(fd)
	_, start, err := stat(ppid)
	if err != nil {
		return Process{}, err
	}
	p := Process{PID: ppid, StartTime: start}
	if p.UID, err = uid(ppid); err != nil {
		return Process{}, err
	}
	if p.Exe, err = os.Readlink(fmt.Sprintf("/proc/%d/exe", ppid)); err != nil {
		return Process{}, fmt.Errorf("resolve agent %d executable: %w", ppid, err)
	}
	p.Exe = strings.TrimSuffix(p.Exe, " (deleted)")
	if p.SHA256, err = h.sum(fmt.Sprintf("/proc/%d/exe", ppid)); err != nil {
		return Process{}, err
	}
	// Still the same processes? The pidfds pin the pids; the start time
	// proves /proc/PID named the same process throughout.
	if err := unix.PidfdSendSignal(fd, 0, nil, 0); err != nil {
		return Process{}, ErrGone
	}
	if _, again, err := stat(ppid); err != nil || again != start {
		return Process{}, ErrGone
	}
	if pp, _, err := stat(shimPID); err != nil || pp != ppid {
		return Process{}, ErrGone
	}
	return p, nil
}

// stat returns a process's parent pid and start time.
func stat(pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/%d/stat: %w", pid, ErrGone)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, err1 := strconv.Atoi(f[1])             // field 4
	st, err2 := strconv.ParseUint(f[19], 10, 64) // field 22
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return ppid, st, nil
}

func uid(pid int) (uint32, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read /proc/%d/status: %w", pid, ErrGone)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, err := strconv.ParseUint(f[0], 10, 32)
				return uint32(n), err
			}
		}
	}
	return 0, fmt.Errorf("no Uid in /proc/%d/status", pid)
}

// Hasher hashes executables, caching by device, inode, size and mtime.
type Hasher struct {
	mu    sync.Mutex
	cache map[fileKey]string
}

type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    unix.Timespec
}

// NewHasher returns an empty cache.
func NewHasher() *Hasher { return &Hasher{cache: map[fileKey]string{}} }

func (h *Hasher) sum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open agent executable: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	k := fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim}
	h.mu.Lock()
	if s, ok := h.cache[k]; ok {
		h.mu.Unlock()
		return s, nil
	}
	h.mu.Unlock()
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", fmt.Errorf("hash agent executable: %w", err)
	}
	s := hex.EncodeToString(d.Sum(nil))
	h.mu.Lock()
	h.cache[k] = s
	h.mu.Unlock()
	return s, nil
}
