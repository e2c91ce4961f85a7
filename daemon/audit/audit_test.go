package audit

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

func openLog(t *testing.T, dir string, o Options) *Log {
	t.Helper()
	o.Path = filepath.Join(dir, "audit.jsonl")
	o.HeadPath = filepath.Join(dir, "audit.head")
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func writeN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := l.Append(Record{"type": "tool.call", "tool": fmt.Sprintf("t%d", i), "user": "alice"}); err != nil {
			t.Fatal(err)
		}
	}
}

func verifyDir(dir string) (Report, error) {
	h, err := ReadHead(filepath.Join(dir, "audit.head"))
	hp := &h
	if err != nil {
		hp = nil
	}
	return Verify(Files(filepath.Join(dir, "audit.jsonl")), hp)
}

func TestChainAcrossRestartAndRotation(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{MaxSize: 2000, Keep: 20})
	writeN(t, l, 30)
	l.Close()
	l = openLog(t, dir, Options{MaxSize: 2000, Keep: 20}) // the chain resumes
	writeN(t, l, 30)
	l.Close()
	if files := Files(filepath.Join(dir, "audit.jsonl")); len(files) < 3 {
		t.Fatalf("expected rotation, have %v", files)
	}
	r, err := verifyDir(dir)
	if err != nil || r.Records != 60 || r.FirstSeq != 1 || r.LastSeq != 60 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}

func TestGroupCommitUnderConcurrency(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeN(t, l, 50)
		}()
	}
	wg.Wait()
	l.Close()
	if r, err := verifyDir(dir); err != nil || r.Records != 800 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}

// tamper applies f to the lines of the log's files and returns the files.
func tamper(t *testing.T, dir string, f func(file int, lines [][]byte) [][]byte) {
	t.Helper()
	for i, path := range Files(filepath.Join(dir, "audit.jsonl")) {
		b, _ := os.ReadFile(path)
		lines := bytes.SplitAfter(b, []byte("\n"))
		if len(lines[len(lines)-1]) == 0 {
			lines = lines[:len(lines)-1]
		}
		os.WriteFile(path, bytes.Join(f(i, lines), nil), 0o600)
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, dir string)
		want   string
	}{
		{"edit a field", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					l[3] = bytes.Replace(l[3], []byte(`"user":"alice"`), []byte(`"user":"mallory"`), 1)
				}
				return l
			})
		}, "seq 4: its content does not match its hash"},
		{"delete a line", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					return append(l[:5:5], l[6:]...)
				}
				return l
			})
		}, "seq 7: follows seq 5"},
		{"swap two lines", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					l[2], l[3] = l[3], l[2]
				}
				return l
			})
		}, "seq 4: follows seq 2"},
		{"truncate the tail", func(t *testing.T, dir string) {
			files := Files(filepath.Join(dir, "audit.jsonl"))
			last := files[len(files)-1]
			b, _ := os.ReadFile(last)
			lines := bytes.SplitAfter(b, []byte("\n"))
			os.WriteFile(last, bytes.Join(lines[:len(lines)-3], nil), 0o600)
		}, "the end was cut off"},
		{"truncate across a rotation", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "audit.jsonl"))
		}, "the end was cut off"},
		{"delete a middle rotated file", func(t *testing.T, dir string) {
			files := Files(filepath.Join(dir, "audit.jsonl"))
			os.Remove(files[1])
			// Renumber so the gap is not visible from the file names.
			for i := 2; i < len(files)-1; i++ {
				os.Rename(files[i], files[i-1])
			}
		}, "were deleted"},
		{"forge a record with a fresh hash", func(t *testing.T, dir string) {
			tamper(t, dir, func(i int, l [][]byte) [][]byte {
				if i == 0 {
					// Drop a record and re-chain the next one's seq: its
					// prev still names the dropped record.
					return append(l[:2:2], l[3:]...)
				}
				return l
			})
		}, "follows seq 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, Options{MaxSize: 1500, Keep: 50})
			writeN(t, l, 60)
			l.Close()
			if _, err := verifyDir(dir); err != nil {
				t.Fatalf("intact log fails: %v", err)
			}
			tt.tamper(t, dir)
			_, err := verifyDir(dir)
			var ve *VerifyError
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("verify = %v, want a VerifyError containing %q", err, tt.want)
			}
		})
	}
}

func TestFullDiskFailsAndRecovers(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, syscall.MNT_DETACH)
	var failures int
	l := openLog(t, dir, Options{MaxSize: 1 << 30, OnFailure: func(error) { failures++ }})
	defer l.Close()
	big := strings.Repeat("x", 4000)
	var err error
	n := 0
	for ; n < 100; n++ {
		if err = l.Append(Record{"type": "tool.call", "pad": big}); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrUnavailable) || l.Healthy() == nil || failures == 0 {
		t.Fatalf("after %d records on a 64k disk: err %v, healthy %v", n, err, l.Healthy())
	}
	// Free space: the next append succeeds and the chain is intact.
	os.WriteFile(filepath.Join(dir, "filler"), nil, 0o600)
	hog := filepath.Join(dir, "hog")
	os.WriteFile(hog, []byte("x"), 0o600)
	os.Remove(hog)
	// Make room by rotating away: simplest is a smaller record.
	if err := l.Append(Record{"type": "tool.call", "small": true}); err != nil {
		t.Fatalf("small record after the failure: %v", err)
	}
	if l.Healthy() != nil {
		t.Fatalf("still unhealthy after a successful write")
	}
	if r, err := verifyDir(dir); err != nil || r.Records != n+1 {
		t.Fatalf("verify after recovery = %+v, %v (wrote %d)", r, err, n+1)
	}
}

func TestBatchModeWritesAndVerifies(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{Sync: "batch", Interval: 20 * time.Millisecond})
	writeN(t, l, 25)
	time.Sleep(60 * time.Millisecond) // an interval's fsync and head update
	h, err := ReadHead(filepath.Join(dir, "audit.head"))
	if err != nil || h.Seq != 25 {
		t.Fatalf("head after the batch interval = %+v, %v", h, err)
	}
	l.Close()
	if r, err := verifyDir(dir); err != nil || r.Records != 25 {
		t.Fatalf("verify = %+v, %v", r, err)
	}
}
