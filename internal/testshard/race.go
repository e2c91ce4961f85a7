//go:build race

package testshard

// raceEnabled: the binary runs under the race detector.
const raceEnabled = true
