package api

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Counts renders counts by name, sorted by name ("email ×2, us_ssn ×1"):
// how a flow denial and mcpcage why name what the detectors found.
func Counts(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range CountNames(m) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// CountNames lists the names of m, sorted.
func CountNames(m map[string]int) []string { return slices.Sorted(maps.Keys(m)) }
