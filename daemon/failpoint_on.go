//go:build failpoints

package daemon

import (
	"os"
	"strconv"
	"time"
)

// With the tag "failpoints" (tests only: the integration tests'
// mcpcaged-failpoints), MCPCAGE_FAILPOINT_MAX_CLIENT_FILES lowers the
// daemon-wide bound of sessions holding client files (clientfiles.go),
// so that a test reaches it with one.
//
// MCPCAGE_FAILPOINT_SESSION_REPLY_DELAY (a duration) delays the reply that
// starts a session, once its server runs: what the server writes as it
// starts then comes before it (TestEarlyStderrComesAfterTheReply).
//
// MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT (a duration) replaces the 30 s an
// audit query waits for a client that reads nothing
// (TestStalledAuditQueriesBounded).
func init() {
	if d, err := time.ParseDuration(os.Getenv("MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT")); err == nil && d > 0 {
		auditWriteTimeout = d
	}
	if d, err := time.ParseDuration(os.Getenv("MCPCAGE_FAILPOINT_SESSION_REPLY_DELAY")); err == nil && d > 0 {
		beforeSessionReply = func() { time.Sleep(d) }
	}
	if n, err := strconv.ParseInt(os.Getenv("MCPCAGE_FAILPOINT_MAX_CLIENT_FILES"), 10, 64); err == nil && n > 0 {
		maxClientFiles = n
	}
}
