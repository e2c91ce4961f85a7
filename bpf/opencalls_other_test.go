//go:build !amd64

package bpf

// legacyOpenCalls: this architecture has neither open(2) nor creat(2).
func legacyOpenCalls() []openCall { return nil }
