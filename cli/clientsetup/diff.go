package clientsetup

import (
	"fmt"

	"github.com/mcpcage/mcpcage/internal/linediff"
)

// Diff renders a unified-style line diff of a and b.
func Diff(name string, a, b []byte) string {
	return fmt.Sprintf("--- %s\n+++ %s (through mcpcage)\n", name, name) + linediff.Lines(string(a), string(b), 0)
}
