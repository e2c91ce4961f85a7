//go:build failpoints

package daemon

import (
	"os"
	"strconv"
)

// With the tag "failpoints" (tests only: the integration tests'
// mcpcaged-failpoints), MCPCAGE_FAILPOINT_MAX_CLIENT_FILES lowers the
// daemon-wide bound of sessions holding client files (heldclients.go),
// so that a test reaches it with one.
func init() {
	if n, err := strconv.ParseInt(os.Getenv("MCPCAGE_FAILPOINT_MAX_CLIENT_FILES"), 10, 64); err == nil && n > 0 {
		maxClientFiles = n
	}
}
