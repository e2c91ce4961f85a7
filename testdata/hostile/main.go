// Command hostile tries one escape from an mcpcage sandbox and reports
// the outcome on stdout: "ESCAPED ..." when the attempt worked, "DENIED
// <error>" when it failed. The sandbox tests run it through the test
// server's run_command tool.
//
// Usage: hostile ATTACK [ARG]
//
//	read PATH | write PATH | mount | ptrace | bpf | unshare-user | keyctl |
//	init-module | raw-socket | io-uring | fork-bomb | euid |
//	connect HOST:PORT | udp-send HOST:PORT | udp-sendto HOST:PORT | open-storm N
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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
	case "open-storm":
		n, _ := strconv.Atoi(arg)
		for i := 0; i < n; i++ {
			f, e := os.Open("/etc/hostname")
			if e == nil {
				f.Close()
			}
		}
		detail = fmt.Sprintf("%d opens", n)
	case "euid":
		fmt.Printf("euid=%d\n", os.Geteuid())
		return
	default:
		fmt.Println("unknown attack", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Println(strings.TrimSpace("DENIED " + err.Error() + " " + detail))
		return
	}
	fmt.Println(strings.TrimSpace("ESCAPED " + detail))
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
