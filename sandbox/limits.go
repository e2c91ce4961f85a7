package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Limits reports which cgroup limits a sandbox ran into.
type Limits struct {
	OOMKilled     bool  // the kernel's OOM killer acted inside the memory limit
	PidsLimitHits int64 // forks refused by the pids limit
}

// cgroupRoots are where the controllers live on cgroup v1, hybrid and v2
// hosts, in the order tried.
var cgroupRoots = map[string][]string{
	"memory": {"/sys/fs/cgroup/memory", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"},
	"pids":   {"/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"},
}

// readLimits reads the counters of the cgroup at path (the spec's
// cgroupsPath) while it still exists.
func readLimits(cgroupsPath string) Limits {
	var l Limits
	if cgroupsPath == "" {
		return l
	}
	for _, root := range cgroupRoots["memory"] {
		dir := filepath.Join(root, cgroupsPath)
		if n, ok := counter(filepath.Join(dir, "memory.oom_control"), "oom_kill"); ok {
			l.OOMKilled = n > 0
			break
		}
		if n, ok := counter(filepath.Join(dir, "memory.events"), "oom_kill"); ok {
			l.OOMKilled = n > 0
			break
		}
	}
	for _, root := range cgroupRoots["pids"] {
		if n, ok := counter(filepath.Join(root, cgroupsPath, "pids.events"), "max"); ok {
			l.PidsLimitHits = n
			break
		}
	}
	return l
}

// cpuBurst is the CFS burst for a sandbox with spec's CPU limit: one
// period's quota. The limit then holds on average; a sandbox may spend,
// above it, up to one period's quota of CPU time it left unused before,
// so a server starting from idle (node's startup keeps two threads busy)
// is not throttled for up to a period at a time. 0: no limit, no burst.
func cpuBurst(spec *specs.Spec) uint64 {
	if spec == nil || spec.Linux == nil || spec.Linux.Resources == nil || spec.Linux.Resources.CPU == nil {
		return 0
	}
	if q := spec.Linux.Resources.CPU.Quota; q != nil && *q > 0 {
		return uint64(*q)
	}
	return 0
}

// setCPUBurst sets the CFS burst of the cgroup at cgroupsPath to burst
// µs, where the kernel has it (5.14+): runc before 1.2 ignores the spec's
// burst. cgroup v1 (hybrid hosts) cpu.cfs_burst_us, else v2 cpu.max.burst.
func setCPUBurst(cgroupsPath string, burst uint64) error {
	v := []byte(strconv.FormatUint(burst, 10))
	var err error
	for _, f := range []string{"/sys/fs/cgroup/cpu/" + cgroupsPath + "/cpu.cfs_burst_us", "/sys/fs/cgroup/" + cgroupsPath + "/cpu.max.burst"} {
		if err = os.WriteFile(filepath.Clean(f), v, 0); err == nil {
			return nil
		}
	}
	return fmt.Errorf("set the CPU burst of cgroup %s: %w", cgroupsPath, err)
}

// counter reads "key N" from a cgroup key-value file.
func counter(path, key string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// cgroupKillWait bounds the wait for a killed cgroup to empty.
const cgroupKillWait = 10 * time.Second

// killCgroup kills every process of the cgroup at cgroupsPath (cgroup v2
// cgroup.kill) and waits until it is empty.
func killCgroup(cgroupsPath string) error {
	if cgroupsPath == "" {
		return errors.New("no cgroup")
	}
	for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		dir := filepath.Join(root, cgroupsPath)
		if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
			continue
		}
		deadline := time.Now().Add(cgroupKillWait)
		for time.Now().Before(deadline) {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
		}
		return fmt.Errorf("cgroup %s not empty %v after cgroup.kill", dir, cgroupKillWait)
	}
	return fmt.Errorf("no cgroup v2 cgroup.kill for %s", cgroupsPath)
}
