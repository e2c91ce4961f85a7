package daemon

import (
	"fmt"
	"testing"
)

// The latest maxTasks entries are kept; taking one forgets it.
func TestBoundedMap(t *testing.T) {
	tests := []struct {
		name     string
		puts     int
		take     string
		want     bool
		wantSize int
	}{
		{"fewer than the bound", 10, "k3", true, 9},
		{"the oldest forgotten first", maxTasks + 5, "k4", false, maxTasks},
		{"the first kept past the bound", maxTasks + 5, "k5", true, maxTasks - 1},
		{"the latest kept", maxTasks + 5, fmt.Sprintf("k%d", maxTasks+4), true, maxTasks - 1},
	}
	for _, tt := range tests {
		var b boundedMap
		for i := range tt.puts {
			b.put(fmt.Sprintf("k%d", i), "v")
		}
		b.put("k5", "again") // an update does not grow it
		_, ok := b.take(tt.take)
		if ok != tt.want || len(b.m) != tt.wantSize || len(b.order) != tt.wantSize {
			t.Errorf("%s: take %s = %v, size %d (order %d); want %v, %d", tt.name, tt.take, ok, len(b.m), len(b.order), tt.want, tt.wantSize)
		}
	}
}
