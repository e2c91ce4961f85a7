// Package logbound bounds what a log line holds of strings that clients
// and servers chose (tool names, reasons that repeat them, lists of
// names): a 4 MiB tool name must not become a 4 MiB log line.
//
// Handler wraps a slog.Handler: every string attribute (and error,
// []string, []byte) of every record, in groups too, is bounded before
// the wrapped handler sees it. A string longer than MaxString keeps its
// first MaxString bytes (cut on a rune boundary) and gains its length and
// the start of its SHA-256, so that two long values stay told apart and
// can be matched with the audit log's (which keeps the whole digest). A
// list keeps its first MaxItems items and says how many it had.
package logbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"unicode/utf8"
)

// Bounds of one attribute.
const (
	// MaxString is the most bytes of a string a log line keeps.
	MaxString = 200
	// MaxItems is the most items of a list a log line keeps.
	MaxItems = 8
	// digestHex is how many hex digits of the SHA-256 a bounded string
	// shows.
	digestHex = 16
)

// String is s, or its first MaxString bytes, its length and the start of
// its digest when it is longer.
func String(s string) string {
	if len(s) <= MaxString {
		return s
	}
	n := MaxString
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	sum := sha256.Sum256([]byte(s))
	return fmt.Sprintf("%s...[%d bytes, sha256:%s]", s[:n], len(s), hex.EncodeToString(sum[:])[:digestHex])
}

// List is the first MaxItems of names, each bounded, and how many more
// there were.
func List(names []string) []string {
	out := make([]string, 0, min(len(names), MaxItems)+1)
	for _, n := range names[:min(len(names), MaxItems)] {
		out = append(out, String(n))
	}
	if more := len(names) - MaxItems; more > 0 {
		out = append(out, fmt.Sprintf("...and %d more", more))
	}
	return out
}

// Handler bounds the attributes of the records it passes to h.
func Handler(h slog.Handler) slog.Handler { return &handler{h} }

type handler struct{ h slog.Handler }

func (b *handler) Enabled(ctx context.Context, l slog.Level) bool { return b.h.Enabled(ctx, l) }

func (b *handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(Attr(a))
		return true
	})
	return b.h.Handle(ctx, out)
}

func (b *handler) WithAttrs(as []slog.Attr) slog.Handler {
	bounded := make([]slog.Attr, len(as))
	for i, a := range as {
		bounded[i] = Attr(a)
	}
	return &handler{b.h.WithAttrs(bounded)}
}

func (b *handler) WithGroup(name string) slog.Handler { return &handler{b.h.WithGroup(name)} }

// Attr is a with its value bounded.
func Attr(a slog.Attr) slog.Attr {
	a.Key = String(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		bounded := make([]slog.Attr, len(group))
		for i, g := range group {
			bounded[i] = Attr(g)
		}
		a.Value = slog.GroupValue(bounded...)
	case slog.KindAny:
		a.Value = anyValue(v)
	default:
		a.Value = v
	}
	return a
}

// anyValue bounds the kinds of values that carry others' strings.
func anyValue(v slog.Value) slog.Value {
	switch x := v.Any().(type) {
	case error:
		if s := x.Error(); len(s) > MaxString {
			return slog.StringValue(String(s))
		}
	case []string:
		if len(x) > MaxItems || longest(x) > MaxString {
			return slog.AnyValue(List(x))
		}
	case []byte:
		if len(x) > MaxString {
			return slog.StringValue(String(string(x)))
		}
	case json.RawMessage:
		if len(x) > MaxString {
			return slog.StringValue(String(string(x)))
		}
	}
	return v
}

func longest(ss []string) int {
	n := 0
	for _, s := range ss {
		n = max(n, len(s))
	}
	return n
}
