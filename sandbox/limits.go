package sandbox

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
