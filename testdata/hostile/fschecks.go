package main

// The attack "fs-check", against the fanotify check of deletions and
// attribute changes (found by a red team at cd790ac):
//
//	fs-check utimes PATH             set PATH's times (utimensat) from a fresh thread
//	fs-check churn N                 N short-lived threads, each a failed unlink (noted in the changers map), then exit
//	fs-check flood DIR NDIRS SECONDS chmod files in NDIRS directories under DIR, from 2 threads, for SECONDS;
//	                                 DIR/flooding appears when the chmods start
//	fs-check rename-burst DIR N      make N files in DIR/burst, then rename each once from one thread, as fast as it can
//	fs-check rename-flood DIR SECONDS rename files back and forth in DIR from 2 threads, and their
//	                                 directories every 64 renames, for SECONDS; DIR/flooding appears when they start
//	fs-check hide DIR KEY SECONDS    open missing files in DIR from 2 threads for SECONDS (DIR/flooding appears when
//	                                 they start), and read KEY once DIR/go appears

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

func fsCheck(args []string) (string, error) {
	if len(args) < 1 {
		return "", fmt.Errorf("fs-check: no variant")
	}
	switch args[0] {
	case "utimes":
		path := args[1]
		var before unix.Stat_t
		_ = unix.Stat(path, &before)
		// UTIME_NOW: write access suffices (times of one's choosing need ownership)
		ts := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		time.Sleep(1100 * time.Millisecond)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, 0); err != nil {
			return "", err
		}
		var after unix.Stat_t
		_ = unix.Stat(path, &after)
		time.Sleep(8 * time.Second) // time for a kill
		return fmt.Sprintf("utimensat %s: mtime %d -> %d, unpunished for 8 s", path, before.Mtim.Sec, after.Mtim.Sec), nil
	case "churn":
		n, _ := strconv.Atoi(args[1])
		var tids []int
		var mu sync.Mutex
		for i := 0; i < n; i++ {
			done := make(chan struct{})
			go func() {
				runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
				_ = unix.Unlink("/work/.fs-check-nonexistent")
				mu.Lock()
				tids = append(tids, unix.Gettid())
				mu.Unlock()
				close(done)
			}()
			<-done
		}
		return fmt.Sprintf("%d threads noted, tids %d..%d", len(tids), tids[0], tids[len(tids)-1]), nil
	case "flood":
		dir := args[1]
		ndirs, _ := strconv.Atoi(args[2])
		secs, _ := strconv.Atoi(args[3])
		files := make([]string, 0, ndirs)
		for i := 0; i < ndirs; i++ {
			d := filepath.Join(dir, fmt.Sprintf("d%05d", i))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return "", err
			}
			f := filepath.Join(d, "f")
			if err := os.WriteFile(f, nil, 0o644); err != nil {
				return "", err
			}
			files = append(files, f)
		}
		n, err := flood(dir, secs, func(w int, deadline time.Time, count *atomic.Int64) {
			mode := uint32(0o644)
			for i := w; time.Now().Before(deadline); i++ {
				for j := 0; j < 256; j++ {
					mode ^= 0o100
					_ = unix.Chmod(files[(i*256+j)%len(files)], mode)
				}
				count.Add(256)
			}
		})
		return fmt.Sprintf("%d chmods in %d s", n, secs), err
	case "rename-burst":
		// Not an attack: what an unpacker or a cache does, faster.
		dir := filepath.Join(args[1], "burst")
		n, _ := strconv.Atoi(args[2])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		for i := 0; i < n; i++ {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%06d", i)), nil, 0o644); err != nil {
				return "", err
			}
		}
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := unix.Rename(filepath.Join(dir, fmt.Sprintf("f%06d", i)), filepath.Join(dir, fmt.Sprintf("g%06d", i))); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("renamed %d files in %v", n, time.Since(start).Round(time.Millisecond)), nil
	case "rename-flood":
		dir := args[1]
		secs, _ := strconv.Atoi(args[2])
		for w := 0; w < 2; w++ {
			d := filepath.Join(dir, fmt.Sprintf("r%d", w))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return "", err
			}
			if err := os.WriteFile(filepath.Join(d, "a"), nil, 0o644); err != nil {
				return "", err
			}
		}
		n, err := flood(dir, secs, func(w int, deadline time.Time, count *atomic.Int64) {
			d := [2]string{filepath.Join(dir, fmt.Sprintf("r%d", w)), filepath.Join(dir, fmt.Sprintf("s%d", w))}
			for i := 0; time.Now().Before(deadline); i++ {
				cur := d[i%2]
				for j := 0; j < 32; j++ {
					if unix.Rename(cur+"/a", cur+"/b") != nil || unix.Rename(cur+"/b", cur+"/a") != nil {
						return // ended
					}
				}
				count.Add(64)
				// The directory itself moves: a rename of a directory
				// empties the watcher's cache of directory paths.
				if unix.Rename(cur, d[(i+1)%2]) != nil {
					return
				}
			}
		})
		return fmt.Sprintf("%d renames in %d s", n, secs), err
	case "hide":
		// A flood of the session's own observations (failed opens, each
		// a file.open record, never folded), then a deny_paths hit in its
		// midst: its record must not be lost with theirs.
		dir, key := args[1], args[2]
		secs, _ := strconv.Atoi(args[3])
		var read atomic.Pointer[string]
		var stop atomic.Bool
		n, err := flood(dir, secs, func(w int, deadline time.Time, count *atomic.Int64) {
			for i := 0; !stop.Load() && time.Now().Before(deadline); i++ {
				for j := 0; j < 64; j++ {
					_, _ = unix.Open(fmt.Sprintf("%s/missing-%d-%d", dir, w, j), unix.O_RDONLY, 0)
				}
				count.Add(64)
				if w != 0 || i%16 != 0 {
					continue
				}
				// The first thread looks for the word (not another
				// goroutine: the flooding threads keep the CPUs).
				if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
					b, err := os.ReadFile(key) // while the other thread floods on
					r := fmt.Sprintf("read %s: %q %v", key, b, err)
					read.Store(&r)
					stop.Store(true)
				}
			}
		})
		if r := read.Load(); r != nil {
			return fmt.Sprintf("%d failed opens; %s", n, *r), err
		}
		return fmt.Sprintf("%d failed opens; not told to read", n), err
	}
	return "", fmt.Errorf("fs-check: unknown variant %q", args[0])
}

// flood writes DIR/flooding, then runs work on 2 threads until SECONDS
// have passed, and returns what they counted.
func flood(dir string, secs int, work func(w int, deadline time.Time, count *atomic.Int64)) (int64, error) {
	var count atomic.Int64
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	if err := os.WriteFile(filepath.Join(dir, "flooding"), nil, 0o644); err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			runtime.LockOSThread()
			work(w, deadline, &count)
		}(w)
	}
	wg.Wait()
	return count.Load(), nil
}
