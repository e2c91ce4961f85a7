package seccompnotify

import (
	"testing"
	"time"
)

func TestPace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		answers int           // answers taken at once, at the step's time
		at      time.Duration // the step's time after t0
		wait    time.Duration // what the last of them waits
	}{
		{"the burst is answered at once", AnswerBurst, 0, 0},
		{"then each waits its turn", 1, 0, time.Second / AnswerRate},
		{"and the next one longer", 1, 0, 2 * time.Second / AnswerRate},
		{"time repays the deficit", 1, 2 * time.Second / AnswerRate, time.Second / AnswerRate},
		{"a quiet second refills part of the burst", AnswerRate - 2, time.Second + 2*time.Second/AnswerRate, 0},
	}
	p := newPace(t0)
	for _, tt := range tests {
		var got time.Duration
		for i := 0; i < tt.answers; i++ {
			got = p.wait(t0.Add(tt.at))
		}
		if d := got - tt.wait; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("%s: waits %v, want %v", tt.name, got, tt.wait)
		}
	}
}
