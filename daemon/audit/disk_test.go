package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// smallDisk mounts a 64 KiB tmpfs with an 8 KiB file that can be removed
// to make room again.
func smallDisk(t *testing.T) (dir, reserve string) {
	t.Helper()
	testenv.RequireRoot(t)
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	reserve = filepath.Join(dir, "reserve")
	if err := os.WriteFile(reserve, make([]byte, 8<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, reserve
}

// setAppendOnly sets or clears FS_APPEND_FL, under which truncate fails.
func setAppendOnly(t *testing.T, path string, on bool) {
	t.Helper()
	const fsIocGetflags, fsIocSetflags, fsAppendFl = 0x80086601, 0x40086602, 0x20
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	// Only the append-only flag changes: writing back flags the kernel
	// set (ext4's extents) as cleared is refused with EPERM.
	flags := int32(0)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocGetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		t.Fatalf("lsattr %s: %v", path, e)
	}
	if on {
		flags |= fsAppendFl
	} else {
		flags &^= fsAppendFl
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocSetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		t.Fatalf("chattr %s: %v", path, e)
	}
}

// bigRecord is about 4 KiB, within the bounds.
func bigRecord(i int) Record {
	r := Record{"type": "tool.call", "n": i}
	for f := 0; f < 4; f++ {
		r[fmt.Sprint("pad", f)] = strings.Repeat("x", 1000)
	}
	return r
}

type drops struct {
	mu sync.Mutex
	n  map[DropReason]int
	ch chan DropReason
}

func (d *drops) on(_ Record, reason DropReason, err error) {
	d.mu.Lock()
	if d.n == nil {
		d.n = map[DropReason]int{}
	}
	if errors.Is(err, ErrUnavailable) {
		d.n[reason]++
	}
	d.mu.Unlock()
	select {
	case d.ch <- reason:
	default:
	}
}

func (d *drops) count(r DropReason) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[r]
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// fill appends until the disk is full and returns the failure, the number
// of records written and the file's size after the last good one.
func fill(t *testing.T, l *Log, path string) (n int, good int64, err error) {
	t.Helper()
	for ; n < 100; n++ {
		if err = l.Append(bigRecord(n)); err != nil {
			return n, good, err
		}
		good = size(t, path)
	}
	t.Fatal("a 64 KiB disk took 100 records of 4 KiB")
	return
}

func TestFullDisk(t *testing.T) {
	tests := []struct {
		name       string
		appendOnly bool // the partial write cannot be cut off
		check      func(t *testing.T, l *Log, d *drops, path string, good int64)
	}{
		{"a call's record fails and is cut off", false, func(t *testing.T, l *Log, d *drops, path string, good int64) {
			if got := size(t, path); got != good {
				t.Fatalf("the file is %d bytes after the failure, the last good record ends at %d", got, good)
			}
		}},
		{"an observation's failure is counted", false, func(t *testing.T, l *Log, d *drops, path string, good int64) {
			// An observation may still fit where the call's record did not
			// (it writes no chain head): queue them until one cannot.
			before := d.count(DropWriteFailed)
			testenv.WaitFor(t, "a dropped observation to be reported", 10*time.Second, func() (bool, string) {
				if d.count(DropWriteFailed) > before {
					return true, ""
				}
				obs := bigRecord(-1)
				obs["type"] = "file.open"
				if !l.AppendAsync(obs) {
					t.Fatal("queue full")
				}
				return false, fmt.Sprintf("%d drops, file %d bytes", d.count(DropWriteFailed), size(t, path))
			})
		}},
		{"a torn record that cannot be cut refuses writes", true, func(t *testing.T, l *Log, d *drops, path string, good int64) {
			torn := size(t, path)
			if torn == good {
				t.Log("the failing write left nothing to cut: no torn record to test this time")
				return
			}
			if err := l.Healthy(); err == nil || !strings.Contains(err.Error(), "could not be cut off") {
				t.Fatalf("healthy = %v", err)
			}
			err := l.Append(Record{"type": "tool.call", "small": true})
			if !errors.Is(err, ErrUnavailable) || size(t, path) != torn {
				t.Fatalf("append after a torn write: %v, file %d bytes (torn at %d)", err, size(t, path), torn)
			}
			setAppendOnly(t, path, false)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, reserve := smallDisk(t)
			var failures int
			d := &drops{ch: make(chan DropReason, 1)}
			l := openLog(t, dir, Options{MaxSize: 1 << 30, OnFailure: func(error) { failures++ }, OnDrop: d.on})
			defer func() { _ = l.Close() }()
			path := filepath.Join(dir, "audit.jsonl")
			if err := l.Append(Record{"type": "first"}); err != nil {
				t.Fatal(err)
			}
			if tt.appendOnly {
				setAppendOnly(t, path, true)
			}
			n, good, err := fill(t, l, path)
			if !errors.Is(err, ErrUnavailable) || l.Healthy() == nil || failures == 0 || d.count(DropWriteFailed) != 1 {
				t.Fatalf("after %d records on a 64k disk: err %v, healthy %v, %d failures, drops %v", n, err, l.Healthy(), failures, d.n)
			}
			tt.check(t, l, d, path, good)
			// Make room: the next record is written after the last good
			// one and the chain is intact.
			must(t, os.Remove(reserve))
			if err := l.Append(bigRecord(n)); err != nil {
				t.Fatalf("append after freeing space: %v", err)
			}
			if l.Healthy() != nil {
				t.Fatalf("still unhealthy after a successful write: %v", l.Healthy())
			}
			if r, err := verifyDir(dir); err != nil || records(t, dir, "tool.call") != n+1 {
				t.Fatalf("verify after recovery = %+v, %v (%d calls written)", r, err, n+1)
			}
		})
	}
}

// The record of what ended a session (Essential) is not lost to a disk
// that is full for a moment: its failed write keeps it, and it is
// written once there is room again, with the chain intact. Other
// records of the failed write are dropped as write_failed, as before.
func TestKeptRecordSurvivesAFullDisk(t *testing.T) {
	dir, reserve := smallDisk(t)
	var mu sync.Mutex
	failures, recoveries := 0, 0
	dropped := map[string]int{}
	l := openLog(t, dir, Options{MaxSize: 1 << 30, Interval: 50 * time.Millisecond,
		OnFailure: func(error) { mu.Lock(); failures++; mu.Unlock() },
		OnRecover: func() { mu.Lock(); recoveries++; mu.Unlock() },
		OnDrop: func(r Record, reason DropReason, _ error) {
			mu.Lock()
			defer mu.Unlock()
			if reason == DropWriteFailed {
				dropped[fmt.Sprint(r["type"])]++
			}
		}})
	defer func() { _ = l.Close() }()
	path := filepath.Join(dir, "audit.jsonl")
	must(t, l.Append(Record{"type": "first"}))
	n, _, err := fill(t, l, path)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("after %d records on a 64k disk: %v", n, err)
	}
	mu.Lock()
	before := failures
	mu.Unlock()
	kill := bigRecord(-1)
	kill["type"] = "file.flood"
	// Values whose bounded forms are over MaxString themselves: a try
	// after the failed one must record the digests of these, not of
	// their bounded forms.
	longKey, longEnv := strings.Repeat("k", 2*MaxString), strings.Repeat("e", 2*MaxString)
	kill[longKey] = "v"
	kill["env"] = map[string]string{"LONG": longEnv}
	wantKey := boundKey(longKey)
	wantEnv, _ := bound(map[string]string{"LONG": longEnv})
	if !l.Enqueue(kill, Essential) {
		t.Fatal("the kill record was refused")
	}
	testenv.WaitFor(t, "the kill record's write to fail", 10*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return failures > before, fmt.Sprint(failures, " failures")
	})
	mu.Lock()
	lost, recovered := dropped["file.flood"], recoveries
	mu.Unlock()
	if lost != 0 {
		t.Fatal("the kill record was dropped when its write failed")
	}
	if recovered != 0 {
		t.Fatalf("OnRecover called %d times while the disk was full", recovered)
	}
	must(t, os.Remove(reserve))
	testenv.WaitFor(t, "the kill record written once there is room", 10*time.Second, func() (bool, string) {
		return records(t, dir, "file.flood") == 1, fmt.Sprint(records(t, dir, "file.flood"), " written")
	})
	must(t, l.Close())
	mu.Lock()
	recovered = recoveries
	mu.Unlock()
	if recovered != 1 {
		t.Fatalf("OnRecover called %d times once the disk had room, want once", recovered)
	}
	if _, err := verifyDir(dir); err != nil {
		t.Fatalf("the chain after the kept record: %v", err)
	}
	if n := records(t, dir, "file.flood"); n != 1 {
		t.Fatalf("%d kill records in the log, want 1", n)
	}
	var got struct {
		Env map[string]string `json:"env"`
	}
	line := recordLine(t, dir, "file.flood")
	var all map[string]any
	must(t, json.Unmarshal(line, &all))
	must(t, json.Unmarshal(line, &got))
	if all[wantKey] != "v" {
		t.Errorf("the long key is not recorded in its bounded form of the original (%d keys)", len(all))
	}
	if got.Env["LONG"] != wantEnv.(map[string]string)["LONG"] {
		t.Errorf("env LONG recorded as %.120q..., want the bounded form of the original %.120q...", got.Env["LONG"], wantEnv.(map[string]string)["LONG"])
	}
}

// recordLine is the one line of type typ in dir's log.
func recordLine(t *testing.T, dir, typ string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	must(t, err)
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(line, []byte(`"type":"`+typ+`"`)) {
			return line
		}
	}
	t.Fatalf("no %s record in the log", typ)
	return nil
}

// Closing a log that cannot write ends: the kept records it cannot write
// are dropped (and said so), not tried forever.
func TestCloseWithAFullDiskEnds(t *testing.T) {
	dir, _ := smallDisk(t)
	dropped := make(chan string, 16)
	l := openLog(t, dir, Options{MaxSize: 1 << 30, Interval: time.Hour,
		OnDrop: func(r Record, reason DropReason, _ error) {
			if reason == DropWriteFailed {
				select {
				case dropped <- fmt.Sprint(r["type"]):
				default:
				}
			}
		}})
	path := filepath.Join(dir, "audit.jsonl")
	must(t, l.Append(Record{"type": "first"}))
	if _, _, err := fill(t, l, path); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	kill := bigRecord(-1)
	kill["type"] = "file.flood"
	l.Enqueue(kill, Essential)
	closed := make(chan error, 1)
	go func() { closed <- l.Close() }()
	select {
	case err := <-closed:
		t.Logf("Close: %v (a full disk may fail the last sync)", err)
	case <-time.After(30 * time.Second): // a bound on a hang, not a timing
		t.Fatal("Close did not return with the disk full and a kept record waiting")
	}
	for {
		select {
		case typ := <-dropped:
			if typ == "file.flood" {
				return
			}
		default:
			t.Fatal("the kept record was neither written nor reported dropped at Close")
		}
	}
}

// A rotation that fails (here: the current file is append-only, as an
// admin may make an audit log, and cannot be renamed) is tried again after
// each commit; the retries must not take the kept segments with them,
// and once the file can be renamed the log rotates and its chain holds.
func TestFailedRotationKeepsTheHistory(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	failures := 0
	var mu sync.Mutex
	// Each phase closes its log: Close waits for the writer, whose
	// rotation runs after the commit that Append waited for.
	phase := func(n int) {
		t.Helper()
		l := openLog(t, dir, Options{MaxSize: 1500, Keep: 3,
			OnFailure: func(error) { mu.Lock(); failures++; mu.Unlock() }})
		writeN(t, l, n)
		must(t, l.Close())
	}
	phase(60) // several rotations: .1, .2 and .3 exist
	kept := map[string]string{}
	for _, f := range Files(path) {
		if f != path {
			b, err := os.ReadFile(f)
			must(t, err)
			kept[f] = string(b)
		}
	}
	if len(kept) != 3 {
		t.Fatalf("%d rotated segments before the test, want 3: %v", len(kept), Files(path))
	}
	setAppendOnly(t, path, true)
	defer setAppendOnly(t, path, false)
	phase(30) // every commit past MaxSize tries to rotate again, and fails
	mu.Lock()
	failed := failures
	mu.Unlock()
	if failed < 2 {
		t.Fatalf("%d rotations failed with the current file append-only, want several", failed)
	}
	for f, content := range kept {
		// A failed rotation may shift a segment into the gap it left,
		// never drop one: every kept segment is still there.
		found := false
		for _, g := range Files(path) {
			if b, err := os.ReadFile(g); err == nil && string(b) == content {
				found = true
			}
		}
		if !found {
			t.Errorf("segment %s (as it was before) is gone after %d failed rotations", f, failed)
		}
	}
	setAppendOnly(t, path, false)
	phase(30)
	if n := len(Files(path)); n != 4 {
		t.Fatalf("%d files after rotating again, want the current one and 3 kept: %v", n, Files(path))
	}
	if _, err := verifyDir(dir); err != nil {
		t.Fatalf("the chain after the failed rotations: %v", err)
	}
}
