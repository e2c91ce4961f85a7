package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// BPFFSRoot is where the BPF file system is mounted (mcpcaged mounts it
// there when it is not).
const BPFFSRoot = "/sys/fs/bpf"

// DefaultBPFPinDir is daemon.bpf_pin_dir's default.
const DefaultBPFPinDir = BPFFSRoot + "/mcpcage"

// checkBPFPinDir says what is wrong with a daemon.bpf_pin_dir, or "".
// It must be a directory of its own below the BPF file system's mount:
// the daemon removes pins it takes for stale ones in it, so it must never
// name a directory that holds anything else (another program's pins, or
// files of an ordinary file system).
func checkBPFPinDir(dir string) string {
	if !strings.HasPrefix(dir, BPFFSRoot+"/") || filepath.Clean(dir) != dir || dir == BPFFSRoot+"/" {
		return fmt.Sprintf("must be a clean absolute path below %s (mcpcage's own directory in the BPF file system), got %q", BPFFSRoot, dir)
	}
	return ""
}
