package ask

import (
	"strconv"
	"strings"
	"testing"
)

// Arguments and names are shown exactly: characters that print nothing or
// reorder the text (a right-to-left override turned
// "\u202ehs.tropsx\u202c-readme.txt" into what reads as "readme-xsport.sh")
// appear as JSON escapes.
func TestQuestionShowsInvisibleCharactersEscaped(t *testing.T) {
	tests := []struct{ args, want string }{
		{`{"path":"/data/\u202ehs.tropsx\u202c-readme.txt"}`, `{"path":"/data/\u202ehs.tropsx\u202c-readme.txt"}`},
		{"{\"t\":\"a\u200bb\"}", `{"t":"a\u200bb"}`},
		{"{\"t\":\"\U000E0041\"}", `{"t":"\udb40\udc41"}`},
		{`{"t":"café ok"}`, `{"t":"café ok"}`},
		// Blank letters and ignorables a name can hide behind (found by a
		// red-team helper: "list_issues\u3164" read as "list_issues").
		{"{\"t\":\"list_issues\u3164\"}", `{"t":"list_issues\u3164"}`},
		{"{\"t\":\"a\u034fb\ufe0f\u2800\"}", `{"t":"a\u034fb\ufe0f\u2800"}`},
	}
	for _, tt := range tests {
		raw, err := strconv.Unquote(`"` + strings.ReplaceAll(tt.args, `"`, `\"`) + `"`)
		if err != nil {
			t.Fatal(err)
		}
		msg := Question{Agent: "a", User: "u", Server: "s", Method: "tools/call", Kind: "tool", Name: "write_file", Arguments: raw, Code: "X"}.Message()
		if !strings.Contains(msg, "Arguments (secrets redacted): "+tt.want) {
			t.Errorf("arguments %q shown as:\n%s\nwant %s", raw, msg, tt.want)
		}
	}
}
