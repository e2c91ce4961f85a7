package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// table writes aligned columns. It keeps the first write error and
// returns it from flush, so a command whose output cannot be written (a
// full disk, a closed pipe) fails instead of printing half a table.
type table struct {
	tw  *tabwriter.Writer
	err error
}

func newTable(w io.Writer) *table { return &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)} }

func (t *table) printf(format string, a ...any) {
	if t.err == nil {
		_, t.err = fmt.Fprintf(t.tw, format, a...)
	}
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
