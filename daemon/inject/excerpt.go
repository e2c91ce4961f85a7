package inject

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

const (
	ellipsis = "…"
	// maxContext bounds the bytes of text read on either side of a match.
	maxContext = 4 * MaxExcerpt
)

// excerpt renders text[start:end] with context on either side, at most
// MaxExcerpt bytes: "…" marks a cut; the match itself comes first, the
// context shares what is left.
func excerpt(text string, start, end int) string {
	m, next := renderForward(text, start, end, MaxExcerpt-2*len(ellipsis))
	var b strings.Builder
	if next < end {
		if start > 0 {
			b.WriteString(ellipsis)
		}
		b.WriteString(m)
		b.WriteString(ellipsis)
		return b.String()
	}
	rem := MaxExcerpt - len(m)
	before, first := renderBackward(text, max(0, start-maxContext), start, rem/2-len(ellipsis))
	if first > 0 {
		b.WriteString(ellipsis)
	}
	b.WriteString(before)
	b.WriteString(m)
	rem = MaxExcerpt - b.Len()
	after, last := renderForward(text, end, min(len(text), end+maxContext), rem-len(ellipsis))
	b.WriteString(after)
	if last < len(text) {
		b.WriteString(ellipsis)
	}
	return b.String()
}

// renderForward renders text[from:to] rune by rune while it fits in
// budget bytes; it returns the rendering and where it stopped.
func renderForward(text string, from, to, budget int) (string, int) {
	var b strings.Builder
	i := from
	for i < to {
		tok, size := token(text, i)
		if b.Len()+len(tok) > budget {
			break
		}
		b.WriteString(tok)
		i += size
	}
	return b.String(), i
}

// renderBackward renders the end of text[from:to] while it fits in budget
// bytes; it returns the rendering and where it starts.
func renderBackward(text string, from, to, budget int) (string, int) {
	var toks []string
	n := 0
	i := to
	for i > from {
		_, size := utf8.DecodeLastRuneInString(text[from:i])
		tok, fsize := token(text, i-size)
		if fsize != size || n+len(tok) > budget {
			break
		}
		toks = append(toks, tok)
		n += len(tok)
		i -= size
	}
	var b strings.Builder
	b.Grow(n)
	for k := len(toks) - 1; k >= 0; k-- {
		b.WriteString(toks[k])
	}
	return b.String(), i
}

// token renders the rune at text[i]: itself when visible, tag characters
// as the ASCII they stand for inside "[tags: ...]", other invisible and
// control characters as <U+XXXX>, newline, return and tab as \n \r \t,
// a byte that is not UTF-8 as \xNN.
func token(text string, i int) (string, int) {
	r, size := utf8.DecodeRuneInString(text[i:])
	switch {
	case r == utf8.RuneError && size == 1:
		return fmt.Sprintf(`\x%02X`, text[i]), 1
	case r == '\n':
		return `\n`, 1
	case r == '\r':
		return `\r`, 1
	case r == '\t':
		return `\t`, 1
	case isTag(r):
		var b strings.Builder
		if p, _ := utf8.DecodeLastRuneInString(text[:i]); i == 0 || !isTag(p) {
			b.WriteString("[tags: ")
		}
		if 0xE0020 <= r && r <= 0xE007E {
			b.WriteByte(byte(r - 0xE0000))
		} else {
			fmt.Fprintf(&b, "<U+%04X>", r)
		}
		if n, _ := utf8.DecodeRuneInString(text[i+size:]); i+size >= len(text) || !isTag(n) {
			b.WriteString("]")
		}
		return b.String(), size
	case r < ' ' || r == 0x7f || unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) ||
		isVS(r) || isZeroWidth(r) || isBidi(r) || r == utf8.RuneError:
		return fmt.Sprintf("<U+%04X>", r), size
	}
	return text[i : i+size], size
}
