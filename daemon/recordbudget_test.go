package daemon

import (
	"encoding/json"
	"testing"

	"github.com/mcpcage/mcpcage/daemon/audit"
)

// overflowCounts reads the counts by key of an overflow record (member
// holds them): how many keys, and their sum. As written: the log may
// have copied the list while bounding it.
func overflowCounts(t *testing.T, rec audit.Record, member string) (keys int, sum int64) {
	t.Helper()
	var what []struct {
		What  string `json:"what"`
		Count int64  `json:"count"`
	}
	b, err := json.Marshal(rec[member])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &what); err != nil {
		t.Fatalf("%s %s: %v", member, b, err)
	}
	for _, w := range what {
		sum += w.Count
	}
	return len(what), sum
}

// A budget writes the first records one by one and counts the rest by
// key, the first maxFoldedKeys keys by name and the others together.
func TestRecordBudget(t *testing.T) {
	tests := []struct {
		name     string
		records  int
		keys     int // distinct keys, in turn
		limit    int64
		admitted int
		folded   int // keys in the overflow
	}{
		{"within the budget", 10, 3, 10, 10, 0},
		{"one key over", 15, 1, 10, 10, 1},
		{"more keys than are named", 200, 100, 10, 10, maxFoldedKeys + 1},
		{"no budget", 5, 5, 0, 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b recordBudget
			admitted := 0
			for i := range tt.records {
				if b.admit(tt.limit, string(rune('A'+i%tt.keys))) {
					admitted++
				}
			}
			over, counts := b.overflow()
			if admitted != tt.admitted || over != int64(tt.records-tt.admitted) || len(counts) != tt.folded {
				t.Fatalf("admitted %d, counted %d by %d keys; want %d, %d by %d", admitted, over, len(counts), tt.admitted, tt.records-tt.admitted, tt.folded)
			}
			var sum int64
			for _, c := range counts {
				sum += c["count"].(int64)
			}
			if sum != over {
				t.Fatalf("counts by key sum to %d, want %d", sum, over)
			}
		})
	}
}
