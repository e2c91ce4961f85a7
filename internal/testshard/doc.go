// Package testshard runs one test binary's top-level tests in several
// processes at once, each test whole in one of them, and prints each
// test's output as one block.
//
// A binary's TestMain calls [Serve] where it would call m.Run; the
// process that starts the binary's tests calls [Run] with the binary's
// path and arguments. Run lists the selected tests (-test.list), starts
// Options.Shards children of the binary and hands each child its next
// test whenever it reports the last one done: the tests named in
// Options.First first (the long ones: a long test started last would
// leave the other children idle), then the others in the binary's order.
// A child runs each test by m.Run with -test.run set to that test alone,
// so the tests of one child run one at a time as in a plain run, and its
// TestMain's set-up and teardown happen once per child.
//
// What a caller must know:
//   - Tests in different children run at the same time. A test may count
//     only what it can tell is its own (the integration tests name
//     everything after their process), and the machine carries the load
//     of several tests at once.
//   - A run that selects subtests by pattern (-test.run with a '/'), uses
//     -test.skip or -test.shuffle, runs benchmarks or fuzzing, or writes
//     profiles or coverage runs in one child, as without sharding; so does
//     a run with an argument that is not a test flag.
//   - A test's output appears once the test has ended; a child that ends
//     in the middle of a test (a panic, -test.timeout) has its output
//     printed and the test failed, and the other children go on.
//   - With -test.failfast no test is started after the first failure.
//   - -test.timeout is the run's, as in one process: a child gives each
//     test what is left of it, so a test still running when it is up
//     panics with every goroutine's stack before go test kills the run.
//   - Under the race detector a child leaves after a failed test (its
//     count of races is the process's); the others run the rest.
//   - go test without -count=1 asks the binary for a log of what it read
//     (-test.testlogfile, for its cache), which a run in several
//     processes cannot write: such a run stays in one.
package testshard
