package cli

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"text/tabwriter"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mcpcage/mcpcage/internal/invisible"
)

// table writes aligned columns. It keeps the first write error and
// returns it from flush, so a command whose output cannot be written (a
// full disk, a closed pipe) fails instead of printing half a table.
type table struct {
	tw  *tabwriter.Writer
	err error
}

func newTable(w io.Writer) *table { return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)} }

// printf writes a row; every string argument is a cell (see cell): a
// name a server, an agent or a client chose cannot break the table,
// forge a row or reach the terminal as a control sequence.
func (t *table) printf(format string, a ...any) {
	if t.err != nil {
		return
	}
	args := make([]any, len(a))
	for i, v := range a {
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
			args[i] = cell(rv.String())
		} else {
			args[i] = v
		}
	}
	_, t.err = fmt.Fprintf(t.tw, format, args...)
}

func (t *table) flush() error {
	if t.err != nil {
		return t.err
	}
	return t.tw.Flush()
}

// warn writes a warning for the user; one that cannot be written has
// nowhere else to go.
func warn(w io.Writer, format string, a ...any) {
	_, _ = fmt.Fprintf(w, "warning: "+format+"\n", a...)
}

// must panics on an error only a programming mistake can cause, such as
// marking a flag that was never defined.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// printable shows a server's string as it is: control, format (bidi,
// zero-width, tag) and other invisible characters as \u{XXXX}, so that a
// name or a definition cannot hide or forge what a reviewer reads.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\t' || !invisible.Rune(r) {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, "\\u{%04X}", r)
	}
	return b.String()
}

// terminalJSON is JSON text b with every control, format and other
// invisible character (internal/invisible) inside its strings written as
// a \u escape: the same JSON values, but nothing that reaches a terminal
// raw (C1 controls, bidi overrides, zero-width characters, which JSON
// encoders leave as they are). A rune past U+FFFF is written as its
// UTF-16 surrogate pair, as JSON escapes are.
func terminalJSON(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r < utf8.RuneSelf || r == utf8.RuneError || !invisible.Rune(r) {
			if out != nil {
				out = append(out, b[i:i+n]...)
			}
			i += n
			continue
		}
		if out == nil {
			out = append(make([]byte, 0, len(b)+32), b[:i]...)
		}
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += n
	}
	if out == nil {
		return b
	}
	return out
}

// printableLines is printable for each line of s.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}

// cell is printable for a table cell: tabs escaped too (they would
// shift the columns).
func cell(s string) string { return strings.ReplaceAll(printable(s), "\t", `\u{0009}`) }
