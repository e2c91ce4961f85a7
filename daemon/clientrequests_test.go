package daemon

import "testing"

// The pre-check never misses a way of writing the member name a parser
// would read as inputRequests.
func TestMayNameInputRequests(t *testing.T) {
	for _, tc := range []struct {
		obj  string
		want bool
	}{
		{`{"content":[{"type":"text","text":"hello"}],"isError":false}`, false},
		{`{"resultType":"input_required","inputRequests":{}}`, true},
		{`{"INPUTREQUESTS":{}}`, true},
		{`{"InputRequeſts":{}}`, true},
		{`{"inputRequest\u0073":{}}`, true},
		{`{"text":"any \u00e9scape"}`, true},
		{`{"text":"a request and a question"}`, false},
		{`{"q":1}`, false},
		{`{"reque":1}`, false},
	} {
		if got := mayNameInputRequests([]byte(tc.obj)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.obj, got, tc.want)
		}
	}
}
