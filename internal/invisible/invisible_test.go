package invisible

import "testing"

func TestRune(t *testing.T) {
	tests := []struct {
		r    rune
		want bool
	}{
		{'a', false}, {' ', false}, {'é', false}, {'日', false}, {'\u0301', false}, // a combining accent: seen on its letter
		{'\x1b', true}, {'\n', true}, {'\u200b', true}, {'\u202e', true}, {'\U000E0041', true},
		{'\u3164', true}, {'\u115f', true}, {'\uffa0', true}, {'\u034f', true}, {'\ufe0f', true},
		{'\U000E0100', true}, {'\u2800', true}, {'\u17b4', true},
	}
	for _, tt := range tests {
		if got := Rune(tt.r); got != tt.want {
			t.Errorf("Rune(%U) = %v, want %v", tt.r, got, tt.want)
		}
	}
}
