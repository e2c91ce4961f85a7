// Package invisible tells the characters a terminal shows as nothing, or
// as something else, from the ones a reader can see: what text from a
// server, a client or a file name must have escaped before a person
// decides on it.
package invisible

import "unicode"

// Rune reports whether r would not be seen for what it is: a control or
// otherwise unprintable character, a format character (bidi overrides,
// zero-width ones, tags), a default-ignorable one (variation selectors,
// the combining grapheme joiner, Hangul fillers that render as blank
// letters), or a blank that is not a space (U+2800, the braille blank).
// With these escaped, "list_issues\u3164" cannot pass for "list_issues".
func Rune(r rune) bool {
	return !unicode.IsPrint(r) || unicode.Is(unicode.Cf, r) ||
		unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) ||
		r == 0x2800
}
