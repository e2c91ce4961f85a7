package inject

import (
	"slices"
	"sync"
	"unicode/utf8"
)

// Rule names a heuristic.
type Rule string

// The rules, in the fixed order Rules reports them.
const (
	// HiddenTags: Unicode tag characters U+E0000..U+E007F (invisible
	// "ASCII smuggling"); the excerpt carries the decoded ASCII.
	HiddenTags Rule = "hidden_unicode_tags"
	// InvisibleText: bidi overrides and isolates anywhere; zero-width
	// characters when there are three or more, or one inside a word (not a
	// ZWJ between emoji); runs of variation selectors.
	InvisibleText Rule = "invisible_characters"
	// IgnoreInstructions: "ignore previous instructions" and kin, "new
	// instructions:", "you are now DAN", "system prompt:".
	IgnoreInstructions Rule = "ignore_instructions"
	// ModelDirective: text addressed to the model behind the user's back:
	// <IMPORTANT>, [INST], <|im_start|>, "do not tell the user", "before
	// using this tool, read ...", "as an AI assistant you must".
	ModelDirective Rule = "instructions_to_model"
	// ExfiltrationURL: an http(s) URL whose query (or, for an image, any
	// part) carries data: a template placeholder, a long encoded value, a
	// parameter named like a secret.
	ExfiltrationURL Rule = "exfiltration_url"
)

// AllRules lists every rule in the fixed order Rules uses.
var AllRules = []Rule{HiddenTags, InvisibleText, IgnoreInstructions, ModelDirective, ExfiltrationURL}

const (
	// MaxScanBytes bounds the text Scan reads: the rest is ignored.
	MaxScanBytes = 256 << 10
	// MaxMatches bounds the matches Scan returns.
	MaxMatches = 16
	// MaxExcerpt bounds a match's excerpt, in bytes.
	MaxExcerpt = 160
)

// maxPerRule bounds what one rule collects before the final cut, so the
// earliest matches survive whatever order the detectors found them in.
const maxPerRule = 4 * MaxMatches

// Match is one hit: the rule, where it is in the scanned text (byte
// offsets, End exclusive) and an excerpt for the audit log: at most
// MaxExcerpt bytes around the match, valid UTF-8, no newlines, invisible
// characters rendered visibly ("<U+202E>", tag characters decoded as
// "[tags: ...]", newlines as "\n", bad bytes as "\xNN").
type Match struct {
	Rule       Rule
	Start, End int
	Excerpt    string
}

func ruleIndex(r Rule) int {
	switch r {
	case HiddenTags:
		return 0
	case InvisibleText:
		return 1
	case IgnoreInstructions:
		return 2
	case ModelDirective:
		return 3
	case ExfiltrationURL:
		return 4
	}
	return -1
}

// scanner is one Scan's state; pooled, its buffers are reused.
type scanner struct {
	text    string
	per     [5][]Match
	folded  []byte  // see fold
	src     []int32 // src[i]: offset in text of the rune folded[i] came from
	pending []zwSeg
}

var pool = sync.Pool{New: func() any { return new(scanner) }}

// Scan returns the hits in text (at most its first MaxScanBytes), sorted
// by Start, at most MaxMatches. Every rule that matched is represented by
// at least one match. Scan never panics, whatever the input (invalid
// UTF-8 included), and is safe for concurrent use.
func Scan(text string) []Match {
	if len(text) > MaxScanBytes {
		cut := MaxScanBytes
		for cut > MaxScanBytes-utf8.UTFMax && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	if text == "" {
		return nil
	}
	s := pool.Get().(*scanner)
	s.text = text
	for i := range s.per {
		s.per[i] = s.per[i][:0]
	}
	if hasNonASCII(text) {
		s.scanInvisible()
	}
	s.fold()
	s.scanPhrases()
	s.scanURLs()
	out := s.result()
	s.text = ""
	if cap(s.folded) > 1<<20 {
		s.folded, s.src = nil, nil
	}
	pool.Put(s)
	return out
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// add records a match of rule r on text[start:end].
func (s *scanner) add(r Rule, start, end int) {
	i := ruleIndex(r)
	if i < 0 || start < 0 || end > len(s.text) || start >= end || len(s.per[i]) >= maxPerRule {
		return
	}
	s.per[i] = append(s.per[i], Match{Rule: r, Start: start, End: end})
}

// result merges overlapping matches of a rule, keeps the first match of
// every rule and then the earliest others, and writes the excerpts.
func (s *scanner) result() []Match {
	var cand []Match
	var firsts []Match
	for i := range s.per {
		ms := s.per[i]
		if len(ms) == 0 {
			continue
		}
		slices.SortFunc(ms, func(a, b Match) int {
			if a.Start != b.Start {
				return a.Start - b.Start
			}
			return a.End - b.End
		})
		merged := ms[:1]
		for _, m := range ms[1:] {
			last := &merged[len(merged)-1]
			if m.Start < last.End {
				last.End = max(last.End, m.End)
				continue
			}
			merged = append(merged, m)
		}
		firsts = append(firsts, merged[0])
		cand = append(cand, merged[1:]...)
	}
	if len(firsts) == 0 {
		return nil
	}
	byStart := func(a, b Match) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		if a.End != b.End {
			return a.End - b.End
		}
		return ruleIndex(a.Rule) - ruleIndex(b.Rule)
	}
	slices.SortFunc(cand, byStart)
	out := make([]Match, 0, min(MaxMatches, len(firsts)+len(cand)))
	out = append(out, firsts...)
	for _, m := range cand {
		if len(out) >= MaxMatches {
			break
		}
		out = append(out, m)
	}
	slices.SortFunc(out, byStart)
	for i := range out {
		out[i].Excerpt = excerpt(s.text, out[i].Start, out[i].End)
	}
	return out
}

// Rules summarises matches: the distinct rules in a fixed order (that of
// AllRules). Rules it does not know are appended, once each, in order of
// appearance.
func Rules(ms []Match) []Rule {
	var seen [5]bool
	var other []Rule
	for _, m := range ms {
		if i := ruleIndex(m.Rule); i >= 0 {
			seen[i] = true
		} else if !slices.Contains(other, m.Rule) {
			other = append(other, m.Rule)
		}
	}
	var out []Rule
	for i, r := range AllRules {
		if seen[i] {
			out = append(out, r)
		}
	}
	return append(out, other...)
}
