package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// What clients and servers name (tools, agents, paths) reaches a
// reviewer's terminal through these; none may start a line of its own,
// shift a column or send a control sequence.
func TestOthersStringsCannotForgeOutput(t *testing.T) {
	const hostile = "echo\n2026-12-03 04:30:00.000 aaaaaaaa tool.call       allow echo\x1b]0;pwned\x07\u202egnp.exe\tx list_issues\u3164\ufe0f"
	raw := []string{"\n", "\x1b", "\x07", "\u202e", "\u3164", "\ufe0f"}
	tests := []struct {
		name string
		out  func() string
	}{
		{"audit record", func() string {
			return formatRecord(map[string]any{"time": time.Now().Format(time.RFC3339Nano), "type": "tool.call", "session": "s",
				"decision": "deny", "tool": hostile, "agent": hostile, "user": "u"})
		}},
		{"table row", func() string {
			var b bytes.Buffer
			tw := newTable(&b)
			tw.printf("%s\t%s\n", hostile, "next")
			if err := tw.flush(); err != nil {
				t.Fatal(err)
			}
			return strings.TrimSuffix(b.String(), "\n")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.out()
			for _, r := range raw {
				if strings.Contains(out, r) {
					t.Fatalf("output %q holds %q raw", out, r)
				}
			}
			if !strings.Contains(out, `\u{000A}`) || !strings.Contains(out, `\u{001B}`) || !strings.Contains(out, `\u{202E}`) || !strings.Contains(out, `\u{3164}`) {
				t.Fatalf("output %q does not show the hidden characters escaped", out)
			}
		})
	}
}

// TestErrorsAreShownNotInterpreted: an error's text (which can carry an
// authorization server's words, through the daemon) reaches the
// terminal with its control characters escaped, its lines kept (those
// after the first indented).
func TestErrorsAreShownNotInterpreted(t *testing.T) {
	tests := []struct{ name, err, want string }{
		{"escapes", "signing in failed: invalid_grant: \x1b[2J\x1b]0;forged\a", `invalid_grant: \u{001B}[2J\u{001B}]0;forged\u{0007}`},
		{"lines kept, the later ones indented", "first\nsecond", "first\n  second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			showError(&b, errors.New(tt.err))
			if got := b.String(); strings.ContainsAny(got, "\x1b\a") || !strings.Contains(got, tt.want) {
				t.Fatalf("shown %q, want it to contain %q and no control character", got, tt.want)
			}
		})
	}
}

// JSON output keeps its values and reaches a terminal with nothing
// invisible in it: JSON encoders leave C1 controls, bidi overrides and
// zero-width characters raw in strings.
func TestTerminalJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a":"plain","b":"ünïcode ✓"}`, `{"a":"plain","b":"ünïcode ✓"}`},
		{"{\"tool\":\"echo\u202eevil\"}", `{"tool":"echo\u202eevil"}`},
		{"{\"c1\":\"x\u009by\"}", `{"c1":"x\u009by"}`},
		{"{\"zw\":\"a\u200bb\",\"tag\":\"\U000E0041\"}", `{"zw":"a\u200bb","tag":"\udb40\udc41"}`},
		{"{\"bad\":\"\xff\"}", "{\"bad\":\"\xff\"}"},
	} {
		got := string(terminalJSON([]byte(tc.in)))
		if got != tc.want {
			t.Errorf("terminalJSON(%q) = %q, want %q", tc.in, got, tc.want)
			continue
		}
		var a, b any
		if json.Valid([]byte(tc.in)) && (json.Unmarshal([]byte(tc.in), &a) != nil || json.Unmarshal([]byte(got), &b) != nil || !reflect.DeepEqual(a, b)) {
			t.Errorf("terminalJSON(%q) changed the value: %v, then %v", tc.in, a, b)
		}
	}
}

// An error's later lines are indented: a daemon's or a peer's words
// cannot print a line that reads as mcpcage's own.
func TestShowErrorIndentsLaterLines(t *testing.T) {
	var b strings.Builder
	showError(&b, errors.New("refused: x\nmcpcage: approved p-1\x1b[2K"))
	if got, want := b.String(), "mcpcage: refused: x\n  mcpcage: approved p-1\\u{001B}[2K\n"; got != want {
		t.Fatalf("showError printed %q, want %q", got, want)
	}
}
