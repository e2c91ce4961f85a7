package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// rss is the resident set of process pid in bytes, 0 when it is gone.
func rss(pid int) int64 {
	return statusField(pid, "VmRSS:") * 1024
}

// parentPid is the parent of process pid, 0 when it is gone.
func parentPid(pid int) int {
	return int(statusField(pid, "PPid:"))
}

// statusField reads the number after key in /proc/PID/status.
func statusField(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			f := bytes.Fields(rest)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.ParseInt(string(f[0]), 10, 64)
			return n
		}
	}
	return 0
}
