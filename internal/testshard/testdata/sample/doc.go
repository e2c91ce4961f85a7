// Package sample is a test binary for testshard's tests: its TestMain
// runs its tests through testshard, as the integration tests' does, and
// its tests meet, fail, crash or print as the environment tells them.
package sample
