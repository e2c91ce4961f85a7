//go:build failpoints

package audit

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// With the tag "failpoints", the writer stalls while the file named by
// MCPCAGE_FAILPOINT_AUDIT_STALL exists (see stallWriter), and writes fail
// while the file named by MCPCAGE_FAILPOINT_AUDIT_FAIL exists (see
// failWrite).
func init() {
	if path := os.Getenv("MCPCAGE_FAILPOINT_AUDIT_STALL"); path != "" {
		stallWriter = func() {
			for {
				if _, err := os.Stat(path); err != nil {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	if path := os.Getenv("MCPCAGE_FAILPOINT_AUDIT_FAIL"); path != "" {
		failWrite = func() error {
			if _, err := os.Stat(path); err == nil {
				return unix.ENOSPC
			}
			return nil
		}
	}
}
