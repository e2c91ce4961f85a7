// Package seccompnotify receives the seccomp user notifications of
// sandboxed servers. runc sends each container's notification fd to a
// unix socket (the spec's seccomp listenerPath); for every notified system
// call the listener reports an [Event] and answers EPERM, so the call
// fails exactly as a plain seccomp denial would, but the daemon knows who
// tried what.
//
// Caveat: if the listener goes away, the kernel fails notified calls with
// ENOSYS: they stay denied.
package seccompnotify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Event is one denied system call.
type Event struct {
	Container string // container id
	Metadata  string // the spec's listenerMetadata
	Pid       uint32 // host pid of the caller
	Syscall   string
	Args      [6]uint64
}

// Listener accepts notification fds from runc.
type Listener struct {
	ln      *net.UnixListener
	handler func(Event)
	log     *slog.Logger
	wg      sync.WaitGroup
	done    chan struct{}
}

// Listen creates the socket at path (mode 0600) and serves until Close.
func Listen(path string, handler func(Event), log *slog.Logger) (*Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("seccomp listener: remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("seccomp listener: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("seccomp listener: %w", err)
	}
	l := &Listener{ln: ln, handler: handler, log: log, done: make(chan struct{})}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Path returns the socket path.
func (l *Listener) Path() string { return l.ln.Addr().String() }

// Close stops accepting and ends every notification loop.
func (l *Listener) Close() error {
	close(l.done)
	err := l.ln.Close()
	l.wg.Wait()
	return err
}

func (l *Listener) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("seccomp listener accept", "err", err)
			continue
		}
		l.receive(c)
	}
}

// receive reads runc's message: the container process state (JSON) with
// the notification fd attached.
func (l *Listener) receive(c *net.UnixConn) {
	defer func() { _ = c.Close() }()
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		l.log.Warn("seccomp listener read", "err", err)
		return
	}
	var fds []int
	if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	var st specs.ContainerProcessState
	if err := json.Unmarshal(buf[:n], &st); err != nil || len(fds) == 0 {
		l.log.Warn("seccomp listener: malformed message from runc", "err", err, "fds", len(fds))
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
		return
	}
	notifyFD := -1
	for i, name := range st.Fds {
		if name == specs.SeccompFdName && i < len(fds) {
			notifyFD = fds[i]
		} else if i < len(fds) {
			_ = unix.Close(fds[i])
		}
	}
	if notifyFD < 0 {
		l.log.Warn("seccomp listener: no seccomp fd in message", "container", st.State.ID)
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { _ = unix.Close(notifyFD) }()
		l.serve(notifyFD, st.State.ID, st.Metadata)
	}()
}

// Kernel structures (include/uapi/linux/seccomp.h).
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

type notif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  seccompData
}

type notifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

func (l *Listener) serve(fd int, container, metadata string) {
	p, paced := newPace(time.Now()), false
	for {
		select {
		case <-l.done:
			return
		default:
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, 500)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			return // every process of the sandbox has exited
		}
		if n == 0 {
			continue
		}
		var req notif
		if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(&req)); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINTR) {
				continue // the caller died before we read it
			}
			l.log.Warn("seccomp notification receive", "container", container, "err", err)
			return
		}
		if d := p.wait(time.Now()); d > 0 {
			if !paced {
				paced = true
				l.log.Warn("sandbox makes refused system calls faster than they are answered: answers paced", "container", container,
					"per_second", AnswerRate, "after", AnswerBurst)
			}
			select {
			case <-time.After(d):
			case <-l.done:
				return
			}
		}
		l.handler(Event{Container: container, Metadata: metadata, Pid: req.Pid, Syscall: SyscallName(int(req.Data.Nr)), Args: req.Data.Args})
		resp := notifResp{ID: req.ID, Error: -int32(unix.EPERM)}
		if err := ioctl(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(&resp)); err != nil && !errors.Is(err, unix.ENOENT) {
			l.log.Warn("seccomp notification answer", "container", container, "err", err)
		}
	}
}

func ioctl(fd int, req uint, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}
