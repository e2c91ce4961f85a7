// Package linediff renders the line diff of two texts: every line of the
// longest common subsequence prefixed "  ", removed lines "- ", added
// lines "+ " (a removal before an addition where both fit). It is for
// small texts (configuration files, tool definitions): its cost is the
// product of the two line counts.
package linediff

import "strings"

// maxCells bounds the comparison table (lines of a × lines of b).
const maxCells = 4_000_000

// Lines diffs a and b line by line (a trailing newline is not a line).
// A non-zero max bounds the output, which then ends in "…".
func Lines(a, b string, max int) string {
	x := strings.Split(strings.TrimSuffix(a, "\n"), "\n")
	y := strings.Split(strings.TrimSuffix(b, "\n"), "\n")
	n, m := len(x), len(y)
	if n*m > maxCells {
		return "(too large to compare line by line)\n"
	}
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = maxInt(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			out.WriteString("  " + x[i] + "\n")
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out.WriteString("- " + x[i] + "\n")
			i++
		default:
			out.WriteString("+ " + y[j] + "\n")
			j++
		}
		if max > 0 && out.Len() > max {
			return out.String()[:max] + "…"
		}
	}
	return out.String()
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
