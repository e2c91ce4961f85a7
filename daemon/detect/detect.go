package detect

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
)

// Detector names a kind of sensitive value.
type Detector string

// The built-in detectors. See the package documentation for exactly what
// each one matches and what it misses.
const (
	AWSAccessKey Detector = "aws_access_key" // AKIA/ASIA + 16 [A-Z0-9]
	PrivateKey   Detector = "private_key"    // -----BEGIN ... PRIVATE KEY----- block (the header alone counts)
	GitHubToken  Detector = "github_token"   // ghp_/gho_/ghu_/ghs_/ghr_ + 36+ alnum, github_pat_ + 22+ [A-Za-z0-9_]
	SlackToken   Detector = "slack_token"    // xox[abpors]-...
	APIKey       Detector = "api_key"        // sk-... (OpenAI, Anthropic sk-ant-...), Stripe sk_live_/rk_live_, Google AIza + 35
	JWT          Detector = "jwt"            // eyJ...\.eyJ...\.signature
	PaymentCard  Detector = "payment_card"   // 13-19 digits, known IIN prefix and length, Luhn-valid
	USSSN        Detector = "us_ssn"         // AAA-GG-SSSS (or AAA GG SSSS), SSA-valid area, group and serial
	IBAN         Detector = "iban"           // country + check digits + BBAN of the country's length, mod-97 == 1
	Email        Detector = "email"          // conservative local@domain.tld
)

// CustomPrefix prefixes the Detector of a custom detector's findings:
// a Custom named "ticket" reports findings as "custom:ticket".
const CustomPrefix = "custom:"

// Bounds of one Scan.
const (
	// MaxScan is the number of bytes of a text Scan reads: the rest is
	// not scanned. The first MaxScan bytes are scanned as if the text
	// ended there, so a value cut by the limit is not found.
	MaxScan = 1 << 20 // 1 MiB
	// MaxFindings is the most findings Scan returns for one text (the
	// first ones, by position), and the most each detector reports.
	MaxFindings = 256
)

// builtins in their fixed order; the order also breaks ties between
// findings with the same span.
var builtins = []Detector{AWSAccessKey, PrivateKey, GitHubToken, SlackToken, APIKey, JWT, PaymentCard, USSSN, IBAN, Email}

// Builtins lists every built-in detector, in a fixed order.
func Builtins() []Detector { return slices.Clone(builtins) }

// IsBuiltin reports whether d is a built-in detector.
func IsBuiltin(d Detector) bool { return slices.Contains(builtins, d) }

// Custom is a user-defined detector from the configuration: a name and
// an RE2 regular expression (Go's regexp syntax).
type Custom struct {
	Name    string
	Pattern string
}

// Finding is one match: which detector, and where (byte offsets into the
// scanned string: text[Start:End] is the value).
type Finding struct {
	Detector Detector
	Start    int
	End      int
}

// Set is a compiled set of detectors. It is immutable and safe for
// concurrent use; a nil *Set finds nothing.
type Set struct {
	builtin []Detector // enabled built-ins, in Builtins order
	custom  []customRE
}

type customRE struct {
	det Detector
	re  *regexp.Regexp
}

var customName = regexp.MustCompile(`^[a-z0-9_]{1,40}$`)

// New compiles a set of detectors: the built-ins named in builtins (nil:
// all of them; an empty non-nil slice: none; duplicates are ignored;
// an unknown name is an error naming the valid ones) and the custom ones.
// A custom name must match [a-z0-9_]{1,40}, be unique and not be a
// built-in's name; its pattern is compiled with regexp (RE2, so matching
// is linear in the text) and must not be able to match an empty string:
// neither "" nor an empty string inside a text (so `a*`, `\b` and `(?m)^`
// are rejected; config validation that only tries "" accepts `\b`).
func New(builtinNames []Detector, custom []Custom) (*Set, error) {
	s := &Set{}
	if builtinNames == nil {
		s.builtin = slices.Clone(builtins)
	} else {
		want := map[Detector]bool{}
		var errs []error
		for _, d := range builtinNames {
			if !IsBuiltin(d) {
				errs = append(errs, fmt.Errorf("unknown detector %q (the built-ins are %s)", d, builtinList()))
				continue
			}
			want[d] = true
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		for _, d := range builtins {
			if want[d] {
				s.builtin = append(s.builtin, d)
			}
		}
	}
	seen := map[string]bool{}
	for _, c := range custom {
		switch {
		case !customName.MatchString(c.Name):
			return nil, fmt.Errorf("custom detector %q: the name must be 1 to 40 lower-case letters, digits or '_'", c.Name)
		case IsBuiltin(Detector(c.Name)):
			return nil, fmt.Errorf("custom detector %q: the name is a built-in detector's", c.Name)
		case seen[c.Name]:
			return nil, fmt.Errorf("custom detector %q is defined twice", c.Name)
		}
		seen[c.Name] = true
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			return nil, fmt.Errorf("custom detector %q: not a valid RE2 regular expression: %w", c.Name, err)
		}
		if re.MatchString("") || nullable(c.Pattern) {
			return nil, fmt.Errorf("custom detector %q: the pattern can match the empty string (it would match everywhere)", c.Name)
		}
		s.custom = append(s.custom, customRE{det: Detector(CustomPrefix + c.Name), re: re})
	}
	return s, nil
}

func builtinList() string {
	names := make([]string, len(builtins))
	for i, d := range builtins {
		names[i] = string(d)
	}
	return strings.Join(names, ", ")
}

// Detectors lists the set's detectors: the enabled built-ins in Builtins
// order, then the custom ones ("custom:NAME") in configuration order.
func (s *Set) Detectors() []Detector {
	if s == nil {
		return nil
	}
	out := slices.Clone(s.builtin)
	for _, c := range s.custom {
		out = append(out, c.det)
	}
	return out
}

// collector gathers one Scan's findings, at most MaxFindings per
// detector.
type collector struct {
	fs  []Finding
	det Detector
	n   int
}

func (c *collector) start(d Detector) { c.det, c.n = d, 0 }

// add records a finding and reports whether the detector may report more.
func (c *collector) add(start, end int) bool {
	if c.n >= MaxFindings {
		return false
	}
	c.fs = append(c.fs, Finding{Detector: c.det, Start: start, End: end})
	c.n++
	return c.n < MaxFindings
}

// full reports whether the current detector has reported its maximum.
func (c *collector) full() bool { return c.n >= MaxFindings }

// Scan returns the findings in text, sorted by Start and non-overlapping
// (of overlapping findings the one starting first is kept, then the
// longer, then the one of the detector that comes first: built-ins in
// Builtins order, then custom ones in configuration order), at most
// MaxFindings. It reads at most the first MaxScan bytes of text. Offsets
// are byte offsets into text. Scan never panics and runs in time linear in
// min(len(text), MaxScan) (custom patterns included: RE2).
func (s *Set) Scan(text string) []Finding {
	if s == nil || text == "" {
		return nil
	}
	if len(text) > MaxScan {
		text = text[:MaxScan]
	}
	var c, card, ssn, iban collector
	var numbers [3]*collector // card, ssn, iban; nil: off
	for _, d := range s.builtin {
		switch d {
		case PaymentCard:
			numbers[0] = &card
		case USSSN:
			numbers[1] = &ssn
		case IBAN:
			numbers[2] = &iban
		default:
			c.start(d)
			scanners[d](text, &c)
			continue
		}
	}
	if numbers != [3]*collector{} {
		card.start(PaymentCard)
		ssn.start(USSSN)
		iban.start(IBAN)
		scanNumbers(text, numbers[0], numbers[1], numbers[2])
		c.fs = append(append(append(c.fs, card.fs...), ssn.fs...), iban.fs...)
	}
	for _, cu := range s.custom {
		c.start(cu.det)
		for _, m := range cu.re.FindAllStringIndex(text, MaxFindings) {
			if m[1] > m[0] && !c.add(m[0], m[1]) {
				break
			}
		}
	}
	return resolve(c.fs, s.order)
}

// order ranks a detector for ties: its index in the set.
func (s *Set) order(d Detector) int {
	for i, b := range s.builtin {
		if b == d {
			return i
		}
	}
	for i, c := range s.custom {
		if c.det == d {
			return len(s.builtin) + i
		}
	}
	return len(s.builtin) + len(s.custom)
}

// resolve sorts findings and drops overlapping ones: earlier first, then
// longer, then by rank. It keeps at most MaxFindings.
func resolve(fs []Finding, rank func(Detector) int) []Finding {
	if len(fs) == 0 {
		return nil
	}
	slices.SortStableFunc(fs, func(a, b Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		if a.End != b.End {
			return b.End - a.End
		}
		return rank(a.Detector) - rank(b.Detector)
	})
	out := fs[:1]
	for _, f := range fs[1:] {
		if len(out) >= MaxFindings {
			break
		}
		if f.Start < out[len(out)-1].End {
			continue
		}
		out = append(out, f)
	}
	return slices.Clip(out)
}

// Redact replaces every finding in text with "[redacted:DETECTOR]". It
// accepts findings in any order: spans are clipped to the text, empty
// ones are ignored, and overlapping ones are merged into one replacement
// (named after the detector of the finding that starts first), so no
// byte of any finding survives. Bytes outside the findings are kept as
// they are.
func Redact(text string, fs []Finding) string {
	if len(fs) == 0 {
		return text
	}
	spans := make([]Finding, 0, len(fs))
	for _, f := range fs {
		f.Start = max(f.Start, 0)
		f.End = min(f.End, len(text))
		if f.Start < f.End {
			spans = append(spans, f)
		}
	}
	if len(spans) == 0 {
		return text
	}
	slices.SortStableFunc(spans, func(a, b Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return b.End - a.End
	})
	var b strings.Builder
	b.Grow(len(text) + 16*len(spans))
	pos := 0
	for i := 0; i < len(spans); {
		f := spans[i]
		end := f.End
		j := i + 1
		for j < len(spans) && spans[j].Start < end {
			end = max(end, spans[j].End)
			j++
		}
		b.WriteString(text[pos:f.Start])
		b.WriteString(Placeholder(f.Detector))
		pos = end
		i = j
	}
	b.WriteString(text[pos:])
	return b.String()
}

// Placeholder is what Redact puts in place of a finding of d.
func Placeholder(d Detector) string { return "[redacted:" + string(d) + "]" }

// Counts summarises findings by detector, e.g. {"us_ssn": 2}, for audit
// records (it never holds the values). No findings: nil.
func Counts(fs []Finding) map[Detector]int {
	if len(fs) == 0 {
		return nil
	}
	m := make(map[Detector]int, 4)
	for _, f := range fs {
		m[f.Detector]++
	}
	return m
}

// nullable reports whether pattern can match an empty string somewhere
// (ignoring what the empty-width assertions require of the context).
func nullable(pattern string) bool {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return false // regexp.Compile reported it
	}
	return canBeEmpty(re.Simplify(), 0)
}

func canBeEmpty(re *syntax.Regexp, depth int) bool {
	if depth > 1000 {
		return true // absurdly nested: refuse it
	}
	switch re.Op {
	case syntax.OpNoMatch, syntax.OpLiteral, syntax.OpCharClass, syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return re.Op == syntax.OpLiteral && len(re.Rune) == 0
	case syntax.OpStar, syntax.OpQuest:
		return true
	case syntax.OpPlus, syntax.OpCapture:
		return canBeEmpty(re.Sub[0], depth+1)
	case syntax.OpRepeat:
		return re.Min == 0 || canBeEmpty(re.Sub[0], depth+1)
	case syntax.OpConcat:
		for _, sub := range re.Sub {
			if !canBeEmpty(sub, depth+1) {
				return false
			}
		}
		return true
	case syntax.OpAlternate:
		for _, sub := range re.Sub {
			if canBeEmpty(sub, depth+1) {
				return true
			}
		}
		return false
	default: // OpEmptyMatch and the assertions: ^ $ \A \z \b \B
		return true
	}
}
