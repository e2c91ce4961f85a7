package tcpsockets

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// churn keeps other loopback connections coming and going until ctx
// ends: held connections (a table of many pages, for /proc/net/tcp)
// and workers that open and reset new ones (no TIME_WAIT left behind).
// It returns how many it made.
func churn(ctx context.Context, t *testing.T, held, workers int) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				var b [1]byte
				_, _ = c.Read(b[:]) // until the other end goes
				_ = c.Close()
			})
		}
	})
	var keep []net.Conn
	for range held {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		keep = append(keep, c)
	}
	t.Cleanup(func() {
		for _, c := range keep {
			_ = c.Close()
		}
	})
	made := new(atomic.Int64)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					continue
				}
				_ = c.(*net.TCPConn).SetLinger(0)
				_ = c.Close()
				made.Add(1)
			}
		})
	}
	return made
}

// TestFoundUnderChurn: the other end of each new connection is found,
// at once, while other loopback connections come and go. A read of
// /proc/net/tcp misses some under this churn (a socket removed from a
// page already read shifts the rest back), which made an administrator's
// server's connection to a squatter look like one leaving the host.
func TestFoundUnderChurn(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	made := churn(ctx, t, 300, 8)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	me := uint32(os.Geteuid())
	const tries = 1000
	missed, wrong := 0, 0
	start := time.Now()
	for range tries {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
		s, found, err := PeerOf(local, dest)
		switch {
		case err != nil:
			t.Fatalf("PeerOf(%s, %s): %v", local, dest, err)
		case !found:
			missed++
		case s.UID != me || s.State != Established || s.Local != dest:
			wrong++
		}
		if a, err := ln.Accept(); err == nil {
			_ = a.Close()
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
	}
	cancel()
	t.Logf("%d lookups in %s while %d other connections came and went", tries, time.Since(start).Round(time.Millisecond), made.Load())
	if missed > 0 || wrong > 0 {
		t.Errorf("of %d connections, %d had no other end found and %d a wrong one", tries, missed, wrong)
	}
	if made.Load() < tries {
		t.Errorf("only %d other connections came and went: not the churn the test is about", made.Load())
	}
}

// BenchmarkLookups: an exact lookup (PeerOf finding the other end), and
// a dump narrowed by a filter (ConnectedTo), which walks the kernel's
// whole table.
func BenchmarkLookups(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	local, dest := c.LocalAddr().(*net.TCPAddr).AddrPort(), c.RemoteAddr().(*net.TCPAddr).AddrPort()
	b.Run("PeerOf", func(b *testing.B) {
		for b.Loop() {
			if _, found, err := PeerOf(local, dest); err != nil || !found {
				b.Fatal(found, err)
			}
		}
	})
	b.Run("ConnectedTo", func(b *testing.B) {
		for b.Loop() {
			if _, found, err := ConnectedTo(local); err != nil || !found {
				b.Fatal(found, err)
			}
		}
	})
}
