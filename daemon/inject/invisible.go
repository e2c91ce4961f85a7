package inject

import (
	"unicode"
	"unicode/utf8"
)

func isTag(r rune) bool { return 0xE0000 <= r && r <= 0xE007F }

// isBidi: the embeddings, overrides (U+202A..U+202E) and isolates
// (U+2066..U+2069) that reorder what a reader sees ("Trojan Source").
// The marks LRM, RLM and ALM are not here: they are ordinary in Arabic
// and Hebrew text and cannot reorder anything by themselves.
func isBidi(r rune) bool {
	return 0x202A <= r && r <= 0x202E || 0x2066 <= r && r <= 0x2069
}

// isZeroWidth: zero-width space, non-joiner, joiner, word joiner, the
// invisible math operators, the Mongolian vowel separator and U+FEFF.
func isZeroWidth(r rune) bool {
	return 0x200B <= r && r <= 0x200D || 0x2060 <= r && r <= 0x2064 || r == 0xFEFF || r == 0x180E
}

// isVS: variation selectors, which can carry arbitrary bytes after an
// emoji ("emoji smuggling"); a legitimate sequence has one per base.
func isVS(r rune) bool {
	return 0xFE00 <= r && r <= 0xFE0F || 0xE0100 <= r && r <= 0xE01EF
}

// emojiish reports runes found on either side of the ZWJ of an emoji
// ZWJ sequence (👨‍👩‍👧, 🏳️‍🌈, 👩🏽‍💻): pictographs, dingbats, the
// emoji variation selector, skin tones.
func emojiish(r rune) bool {
	switch {
	case 0x1F000 <= r && r <= 0x1FAFF, 0x2190 <= r && r <= 0x21FF, 0x2300 <= r && r <= 0x23FF,
		0x2460 <= r && r <= 0x27BF, 0x2900 <= r && r <= 0x297F, 0x2B00 <= r && r <= 0x2BFF:
		return true
	case r == 0xFE0F, r == 0x20E3, r == 0x00A9, r == 0x00AE, r == 0x203C, r == 0x2049,
		r == 0x2122, r == 0x2139, r == 0x3030, r == 0x303D, r == 0x3297, r == 0x3299:
		return true
	}
	return false
}

// complexScript reports letters and marks of scripts that use ZWSP, ZWNJ
// and ZWJ in ordinary text (Arabic and Persian, the Indic scripts, Thai,
// Khmer, Myanmar, CJK line-break hints, ...): anything but Latin, Greek
// and Cyrillic.
func complexScript(r rune) bool {
	if r < 0x0590 || !(unicode.IsLetter(r) || unicode.IsMark(r)) {
		return false
	}
	return !unicode.In(r, unicode.Latin, unicode.Greek, unicode.Cyrillic)
}

func isWordRune(r rune) bool {
	return r >= 0 && (unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r))
}

// zwSeg is a run of zero-width characters not yet known to be suspect:
// that depends on how many there are in the whole text.
type zwSeg struct {
	start, end int
	inWord     bool
}

// scanInvisible finds HiddenTags and InvisibleText.
func (s *scanner) scanInvisible() {
	text := s.text
	s.pending = s.pending[:0]
	zwTotal := 0
	prev := rune(-1) // the rune before i, -1 at the start
	i := 0
	if len(text) >= 3 && text[:3] == "\uFEFF" {
		i = 3 // a byte order mark at the start is no hiding place
	}
	next := func(j int) rune {
		if j >= len(text) {
			return -1
		}
		r, _ := utf8.DecodeRuneInString(text[j:])
		return r
	}
	for i < len(text) {
		c := text[i]
		if c < utf8.RuneSelf {
			prev = rune(c)
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case isTag(r):
			j, last, n, flagLike := i, r, 0, true
			for j < len(text) {
				r2, s2 := utf8.DecodeRuneInString(text[j:])
				if !isTag(r2) {
					break
				}
				if !(0xE0030 <= r2 && r2 <= 0xE0039 || 0xE0061 <= r2 && r2 <= 0xE007A || r2 == 0xE007F) {
					flagLike = false
				}
				last, n = r2, n+1
				j += s2
			}
			// 🏴 + tag letters + CANCEL TAG is a subdivision flag
			// (England, Scotland, Wales), not smuggling.
			if !(prev == 0x1F3F4 && flagLike && last == 0xE007F && n >= 3 && n <= 8) {
				s.add(HiddenTags, i, j)
			}
			prev, i = last, j
			continue
		case isVS(r):
			j, last, n := i, r, 0
			for j < len(text) {
				r2, s2 := utf8.DecodeRuneInString(text[j:])
				if !isVS(r2) {
					break
				}
				last, n = r2, n+1
				j += s2
			}
			if n >= 2 {
				s.add(InvisibleText, i, j)
			}
			prev, i = last, j
			continue
		case isBidi(r) || isZeroWidth(r):
			j, last, n, bidi, joinersOnly := i, r, 0, false, true
			for j < len(text) {
				r2, s2 := utf8.DecodeRuneInString(text[j:])
				if !isBidi(r2) && !isZeroWidth(r2) {
					break
				}
				if isBidi(r2) {
					bidi = true
				} else {
					n++
				}
				if r2 < 0x200B || r2 > 0x200D {
					joinersOnly = false
				}
				last = r2
				j += s2
			}
			after := next(j)
			switch {
			case bidi:
				s.add(InvisibleText, i, j)
			case n == 1 && r == 0x200D && emojiish(prev) && emojiish(after):
				// an emoji ZWJ sequence
			case n <= 2 && joinersOnly && (complexScript(prev) || complexScript(after)):
				// Persian ZWNJ, Indic ZWJ/ZWNJ, Thai or CJK ZWSP
			default:
				zwTotal += n
				if len(s.pending) < maxPerRule {
					s.pending = append(s.pending, zwSeg{i, j, isWordRune(prev) && isWordRune(after)})
				}
			}
			prev, i = last, j
			continue
		}
		prev = r
		i += size
	}
	for _, z := range s.pending {
		if zwTotal >= 3 || z.inWord {
			s.add(InvisibleText, z.start, z.end)
		}
	}
}
