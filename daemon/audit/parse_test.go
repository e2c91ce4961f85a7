package audit

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestParseRecord: a record with a number no float64 holds (a client's
// claims could carry 1e400) is read, not skipped (found by a red-team
// helper: every reader dropped the session.claims record so).
func TestParseRecord(t *testing.T) {
	tests := []struct {
		name string
		line string
		want map[string]any
		bad  bool
	}{
		{"plain", `{"seq":3,"type":"tool.call","ok":true}`, map[string]any{"seq": 3.0, "type": "tool.call", "ok": true}, false},
		{"a number beyond float64", `{"seq":4,"type":"session.claims","client_info":{"name":"evil","x":1e400,"v":[1,-1e999]}}`,
			map[string]any{"seq": 4.0, "type": "session.claims", "client_info": map[string]any{"name": "evil", "x": json.Number("1e400"), "v": []any{1.0, json.Number("-1e999")}}}, false},
		{"not JSON", `{"seq":`, nil, true},
		{"not an object", `[1]`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRecord([]byte(tt.line))
			if (err != nil) != tt.bad || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseRecord(%s) = %#v, %v; want %#v (error: %v)", tt.line, got, err, tt.want, tt.bad)
			}
		})
	}
}
