package audit

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// ParseRecord reads one line of the log as a record, for readers (the
// audit query, `mcpcage audit`, `mcpcage why`). A number beyond
// float64's range makes json.Unmarshal refuse the whole line, and a
// reader that skips lines it cannot read would hide that record: such
// numbers stay json.Number (their text); every other number is a
// float64, as json.Unmarshal gives it.
func ParseRecord(line []byte) (map[string]any, error) {
	var r map[string]any
	err := json.Unmarshal(line, &r)
	if err == nil {
		return r, nil
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	var n map[string]any
	if d.Decode(&n) != nil || n == nil {
		return nil, err
	}
	floatsWhereTheyFit(n)
	return n, nil
}

// floatsWhereTheyFit turns every json.Number in v that float64 holds
// into that float64, in place.
func floatsWhereTheyFit(v any) any {
	switch x := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(x), 64); err == nil {
			return f
		}
	case map[string]any:
		for k, e := range x {
			x[k] = floatsWhereTheyFit(e)
		}
	case []any:
		for i, e := range x {
			x[i] = floatsWhereTheyFit(e)
		}
	}
	return v
}
