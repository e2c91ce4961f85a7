package api

import "testing"

func TestCounts(t *testing.T) {
	for _, tc := range []struct {
		m    map[string]int
		want string
	}{
		{nil, ""},
		{map[string]int{"us_ssn": 1}, "us_ssn ×1"},
		{map[string]int{"us_ssn": 1, "email": 2}, "email ×2, us_ssn ×1"},
	} {
		if got := Counts(tc.m); got != tc.want {
			t.Errorf("Counts(%v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}
