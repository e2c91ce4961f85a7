package bpf

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/bpf/probe"
	"github.com/mcpcage/mcpcage/internal/testenv"
)

// The benchmark's child: runs a syscall loop and prints ns per iteration.
func TestMain(m *testing.M) {
	if loop := os.Getenv("MCPCAGE_BENCH_LOOP"); loop != "" {
		n, _ := strconv.Atoi(os.Getenv("MCPCAGE_BENCH_N"))
		fmt.Println(runLoop(loop, n).Nanoseconds() / int64(n))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runLoop(kind string, n int) time.Duration {
	start := time.Now()
	switch kind {
	case "open":
		for i := 0; i < n; i++ {
			fd, err := syscall.Open("/etc/hostname", syscall.O_RDONLY, 0)
			if err == nil {
				syscall.Close(fd)
			}
		}
	case "dial": // one attempt, whatever its outcome
		if c, err := net.Dial(os.Getenv("MCPCAGE_BENCH_PROTO"), os.Getenv("MCPCAGE_BENCH_ADDR")); err == nil {
			c.Close()
		}
	case "connect":
		addr := os.Getenv("MCPCAGE_BENCH_ADDR")
		for i := 0; i < n; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				panic(err)
			}
			c.Close()
		}
	}
	return time.Since(start)
}

// child runs the loop in a new process placed in cgroup dir ("" = the
// benchmark's own) and returns ns per iteration.
func child(b testing.TB, kind string, n int, dir, addr string) float64 {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MCPCAGE_BENCH_LOOP="+kind, "MCPCAGE_BENCH_N="+strconv.Itoa(n), "MCPCAGE_BENCH_ADDR="+addr)
	if dir != "" {
		fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer syscall.Close(fd)
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("bench child: %v", err)
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		b.Fatalf("bench child said %q", out)
	}
	return v
}

// BenchmarkSyscallOverhead measures open/close and TCP connect loops with
// mcpcage's programs attached and detached, for a process inside a
// registered session and for one outside every session (what every other
// process on the host pays), and reports the ratios side by side.
// Targets: inside <= 1.15x, outside <= 1.03x.
func BenchmarkSyscallOverhead(b *testing.B) {
	testenv.RequireRoot(b)
	root := probe.CgroupV2Root()
	testenv.Require(b, root != "", "cgroup v2")
	probe.EnsureTracefs()
	parent := filepath.Join(root, fmt.Sprintf("mcpcage-bench-%d", os.Getpid()))
	session := filepath.Join(parent, "s1")
	if err := os.MkdirAll(session, 0o755); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(parent)
	defer os.Remove(session)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	addr := ln.Addr().String()
	cgid, err := CgroupID(session)
	if err != nil {
		b.Fatal(err)
	}
	const opens, connects = 200000, 5000
	measure := func() (inOpen, outOpen, inConn, outConn float64) {
		return child(b, "open", opens, session, addr), child(b, "open", opens, "", addr),
			child(b, "connect", connects, session, addr), child(b, "connect", connects, "", addr)
	}
	var events atomic.Int64
	const rounds = 5
	var dIn, dOut, dInC, dOutC, aIn, aOut, aInC, aOutC []float64
	var lost uint64
	var evRate []float64
	for b.Loop() {
		for r := 0; r < rounds; r++ {
			w, x, y, z := measure() // detached
			dIn, dOut, dInC, dOutC = append(dIn, w), append(dOut, x), append(dInC, y), append(dOutC, z)
			cage, err := Load(Options{CgroupParent: parent})
			if err != nil {
				b.Fatal(err)
			}
			if err := cage.Register(cgid, Policy{HostNetwork: true, Egress: []EgressRule{{Prefix: netip.MustParsePrefix("127.0.0.1/32")}},
				DenyComponents: map[string]int{".ssh": 0}}); err != nil {
				b.Fatal(err)
			}
			events.Store(0)
			if err := cage.Events(func(Event) { events.Add(1) }, func(error) {}); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			w, x, y, z = measure() // attached
			evRate = append(evRate, float64(events.Load())/time.Since(start).Seconds())
			aIn, aOut, aInC, aOutC = append(aIn, w), append(aOut, x), append(aInC, y), append(aOutC, z)
			rb, th, _ := cage.Lost()
			lost += rb + th
			cage.Close()
		}
	}
	b.ReportMetric(median(aIn)/median(dIn), "inside-open-x")
	b.ReportMetric(median(aOut)/median(dOut), "outside-open-x")
	b.ReportMetric(median(aInC)/median(dInC), "inside-connect-x")
	b.ReportMetric(median(aOutC)/median(dOutC), "outside-connect-x")
	b.ReportMetric(median(dOut), "detached-open-ns")
	b.ReportMetric(median(aIn), "inside-open-ns")
	b.ReportMetric(median(evRate), "events/s")
	b.ReportMetric(float64(lost), "events-lost-or-throttled")
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
