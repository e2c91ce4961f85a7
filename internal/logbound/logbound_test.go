package logbound

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	if s := String("short"); s != "short" {
		t.Fatalf("a short string changed: %q", s)
	}
	a, b := strings.Repeat("é", 1<<20)+"a", strings.Repeat("é", 1<<20)+"b"
	ba, bb := String(a), String(b)
	if len(ba) > MaxString+64 || !strings.Contains(ba, "[2097153 bytes, sha256:") {
		t.Fatalf("bounded to %d bytes: %.300q", len(ba), ba)
	}
	if ba == bb {
		t.Fatal("two long strings with one prefix are bounded alike")
	}
	if !strings.HasPrefix(ba, strings.Repeat("é", MaxString/2)) {
		t.Fatalf("not cut on a rune boundary: %.300q", ba)
	}
}

func TestList(t *testing.T) {
	names := make([]string, 1000)
	for i := range names {
		names[i] = strings.Repeat("n", 1000)
	}
	l := List(names)
	if len(l) != MaxItems+1 || l[MaxItems] != "...and 992 more" || len(l[0]) > MaxString+64 {
		t.Fatalf("List kept %d items: last %q, first of %d bytes", len(l), l[len(l)-1], len(l[0]))
	}
}

// Every string a record carries is bounded, in whatever shape.
func TestHandlerBoundsEveryLine(t *testing.T) {
	huge := strings.Repeat("A", 4<<20)
	many := make([]string, 200000)
	for i := range many {
		many[i] = "tool"
	}
	var out bytes.Buffer
	log := slog.New(Handler(slog.NewTextHandler(&out, nil))).With("name", huge)
	log.WithGroup("g").Warn("request denied", "reason", "tool "+huge, "err", errors.New(huge), "names", many,
		"raw", []byte(huge), slog.Group("inner", huge, huge), "n", 3)
	line := out.String()
	if len(line) > 4<<10 {
		t.Fatalf("a log line of %d bytes", len(line))
	}
	for _, want := range []string{"n=3", "...and 199992 more", "4194304 bytes, sha256:"} {
		if !strings.Contains(line, want) {
			t.Errorf("the line lacks %q: %s", want, line)
		}
	}
}
