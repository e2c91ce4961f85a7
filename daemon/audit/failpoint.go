package audit

// stallWriter is called by the writer goroutine before it takes each
// batch. A no-op, but in a build with the tag "failpoints" (tests only:
// the integration tests' mcpcaged-failpoints) it waits while the file named by
// MCPCAGE_FAILPOINT_AUDIT_STALL exists, so that an integration test can
// fill the queue behind a real daemon's writer (failpoint_on.go).
var stallWriter = func() {}

// failWrite is called before each write of a batch: an error fails the
// write as the disk's would. Always nil, but in a build with the tag
// "failpoints" it is ENOSPC while the file named by
// MCPCAGE_FAILPOINT_AUDIT_FAIL exists, so that an integration test can
// make a real daemon's audit log fail and heal (failpoint_on.go).
var failWrite = func() error { return nil }
