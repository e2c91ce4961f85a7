package linediff

import "testing"

func TestLines(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		max        int
		want       string
	}{
		{"same", "x\ny\n", "x\ny\n", 0, "  x\n  y\n"},
		{"changed line", "x\ny\nz", "x\nY\nz", 0, "  x\n- y\n+ Y\n  z\n"},
		{"added", "x", "x\ny", 0, "  x\n+ y\n"},
		{"removed", "x\ny", "y", 0, "- x\n  y\n"},
		{"bounded", "aaaa\nbbbb", "cccc\ndddd", 8, "- aaaa\n-…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Lines(tc.a, tc.b, tc.max); got != tc.want {
				t.Errorf("Lines(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
			}
		})
	}
}
