//go:build failpoints

package audit

import (
	"os"
	"time"
)

// With the tag "failpoints", the writer stalls while the file named by
// MCPCAGE_FAILPOINT_AUDIT_STALL exists (see stallWriter).
func init() {
	path := os.Getenv("MCPCAGE_FAILPOINT_AUDIT_STALL")
	if path == "" {
		return
	}
	stallWriter = func() {
		for {
			if _, err := os.Stat(path); err != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
