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

// A result's isError is read as a client's JSON parser reads it: the
// exact name, the last of duplicates, only the literal true.
func TestResultIsError(t *testing.T) {
	for _, tc := range []struct {
		result string
		want   bool
	}{
		{`{"content":[],"isError":true}`, true},
		{` { "isError" : true } `, true},
		{`{"content":[],"isError":false}`, false},
		{`{"content":[]}`, false},
		{`{"isError":"true"}`, false},
		{`{"isError":1}`, false},
		{`{"IsError":true}`, false},
		{`{"isError":true,"isError":false}`, false},
		{`{"isError":false,"isError":true}`, true},
		{`{"is\u0045rror":true}`, true},
		{`{"content":[{"type":"text","isError":true}]}`, false},
		{`{"structuredContent":{"isError":true}}`, false},
		{`[]`, false},
		{`{"isError":true`, false},
	} {
		if got := resultIsError([]byte(tc.result)); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.result, got, tc.want)
		}
	}
}
