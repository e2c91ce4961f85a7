package inject

import (
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// maxDecomposition: a compatibility decomposition longer than this (in
// bytes) is not applied (Arabic ligatures such as U+FDFA); no letter that
// folds to ASCII needs one, and it keeps the folded text within a small
// multiple of the input.
const maxDecomposition = 12

// fold writes s.folded, the text the phrase rules read, and s.src, the
// way back to the original offsets. The folding:
//   - compatibility decomposition per rune (NFKD: fullwidth "ｉ", math
//     "𝐢", circled "ⓘ", ligature "ﬁ" become ASCII), combining marks
//     dropped ("ïgnore" reads "ignore"),
//   - lower case, and a few confusable Cyrillic/Greek/IPA letters mapped
//     to the Latin letter they look like,
//   - invisible characters (zero-width, bidi controls, tag characters,
//     variation selectors, soft hyphen) and '*' dropped, so they cannot
//     split a word,
//   - any run of white space or control characters is one ' ', curly
//     quotes are straight.
func (s *scanner) fold() {
	text := s.text
	fo := folder{f: s.folded[:0], src: s.src[:0], space: true}
	for i := 0; i < len(text); {
		c := text[i]
		if c < utf8.RuneSelf {
			// the common case, inline
			switch {
			case 'a' <= c && c <= 'z' || '0' <= c && c <= '9':
				fo.f = append(fo.f, c)
				fo.src = append(fo.src, int32(i))
				fo.space = false
			default:
				fo.ascii(c, i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fo.emit(' ', i)
		case dropped(r):
		case r == '\u2018' || r == '\u2019' || r == '\u201B' || r == '\u2032':
			fo.emit('\'', i)
		case r == '\u201C' || r == '\u201D':
			fo.emit('"', i)
		default:
			d := norm.NFKD.PropertiesString(text[i:]).Decomposition()
			if len(d) == 0 || len(d) > maxDecomposition {
				fo.rune(r, i)
				break
			}
			for j := 0; j < len(d); {
				dr, ds := utf8.DecodeRune(d[j:])
				fo.rune(dr, i)
				j += ds
			}
		}
		i += size
	}
	s.folded, s.src = fo.f, fo.src
}

// folder is fold's output.
type folder struct {
	f     []byte
	src   []int32
	space bool // the last byte written is a space (or nothing is written)
}

// emit writes c, which came from text[at:]; spaces collapse.
func (fo *folder) emit(c byte, at int) {
	if c == ' ' {
		if fo.space {
			return
		}
		fo.space = true
	} else {
		fo.space = false
	}
	fo.f = append(fo.f, c)
	fo.src = append(fo.src, int32(at))
}

func (fo *folder) ascii(c byte, at int) {
	switch {
	case 'A' <= c && c <= 'Z':
		fo.emit(c+'a'-'A', at)
	case c <= ' ' || c == 0x7f:
		fo.emit(' ', at)
	case c == '*':
		// markdown emphasis: "**ignore** previous instructions"
	default:
		fo.emit(c, at)
	}
}

// rune writes the folding of r, a rune of text[at:] or of its
// decomposition.
func (fo *folder) rune(r rune, at int) {
	if r < utf8.RuneSelf {
		fo.ascii(byte(r), at)
		return
	}
	if unicode.In(r, unicode.Mn, unicode.Me) || dropped(r) {
		return
	}
	if unicode.IsSpace(r) || unicode.In(r, unicode.Zl, unicode.Zp, unicode.Cc) {
		fo.emit(' ', at)
		return
	}
	r = confusable(unicode.ToLower(r))
	if r < utf8.RuneSelf {
		fo.ascii(byte(r), at)
		return
	}
	fo.space = false
	n := len(fo.f)
	fo.f = utf8.AppendRune(fo.f, r)
	for range len(fo.f) - n {
		fo.src = append(fo.src, int32(at))
	}
}

// dropped reports the invisible characters fold skips.
func dropped(r rune) bool {
	return isTag(r) || isZeroWidth(r) || isBidi(r) || isVS(r) ||
		r == '\u00AD' || r == '\u034F' || r == '\u200E' || r == '\u200F' || r == '\u061C'
}

// confusable maps a few lower-case letters of other scripts to the Latin
// letter they are drawn like. Not a full confusables table: enough for
// the letters of the phrases the rules look for.
func confusable(r rune) rune {
	switch r {
	case 'а', 'α': // Cyrillic a, Greek alpha
		return 'a'
	case 'с', 'ϲ':
		return 'c'
	case 'ԁ':
		return 'd'
	case 'е', 'ε', 'ҽ':
		return 'e'
	case 'ɡ', 'ց':
		return 'g'
	case 'һ', 'հ':
		return 'h'
	case 'і', 'ι', 'ı', 'ɪ', 'ӏ', 'ǀ':
		return 'i'
	case 'ј', 'ϳ':
		return 'j'
	case 'κ', 'к':
		return 'k'
	case 'ո', 'η':
		return 'n'
	case 'о', 'ο', 'σ', 'օ', 'ᴏ':
		return 'o'
	case 'р', 'ρ':
		return 'p'
	case 'ԛ':
		return 'q'
	case 'ʀ', 'г':
		return 'r'
	case 'ѕ':
		return 's'
	case 'τ', 'т':
		return 't'
	case 'υ', 'ս', 'ᴜ':
		return 'u'
	case 'ν', 'ѵ', 'ᴠ':
		return 'v'
	case 'ԝ', 'ω', 'ᴡ':
		return 'w'
	case 'х', 'χ':
		return 'x'
	case 'у', 'γ':
		return 'y'
	case 'ᴢ':
		return 'z'
	}
	return r
}
