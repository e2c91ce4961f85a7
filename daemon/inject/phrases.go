package inject

import (
	"bytes"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The phrase rules read the folded text (see fold): lower case, one space
// between words. Each pattern is anchored (^) and tried only where one of
// its trigger words starts, on a window of phraseWindow bytes, so the
// cost is a word scan and a map lookup per word, plus a short regexp
// run where a trigger word occurs.
const phraseWindow = 128

type phrase struct {
	rule Rule
	re   *regexp.Regexp
	// prefix is the literal the pattern starts with, checked before the
	// regexp runs.
	prefix []byte
	// ok, when set, vets a match: pre is the folded text before it, w
	// the window it is in, m the submatch indices in w.
	ok func(pre, w []byte, m []int) bool
}

var (
	// triggers: the phrases to try where a word starts.
	triggers = map[string][]*phrase{}
	// atAngle and atBracket: the phrases to try at '<' and '['.
	atAngle, atBracket []*phrase
	// triggerFirst and maxTrigger spare the map most lookups.
	triggerFirst [26]bool
	maxTrigger   int
)

func addPhrase(words string, rule Rule, re string, ok func(pre, w []byte, m []int) bool) {
	p := &phrase{rule: rule, re: regexp.MustCompile(re), ok: ok}
	if lit, _ := regexp.MustCompile(strings.TrimPrefix(re, "^")).LiteralPrefix(); lit != "" {
		p.prefix = []byte(lit)
	}
	for _, w := range strings.Fields(words) {
		if len(w) > 1 {
			triggerFirst[w[0]-'a'] = true
			maxTrigger = max(maxTrigger, len(w))
		}
		switch w {
		case "<":
			atAngle = append(atAngle, p)
		case "[":
			atBracket = append(atBracket, p)
		default:
			triggers[w] = append(triggers[w], p)
		}
	}
}

// words used by several patterns
const (
	modelNoun = `(?:ai (?:model|assistant|agent|system)|ai|llm|large language model|language model|chatbot|claude|chatgpt|gpt|gemini|copilot)`
	dataVerb  = `(?:read|call|send|include|pass|upload|forward|attach|share|post|transmit|copy|collect|extract|exfiltrate|leak|dump|cat|append|embed|encode)`
	leakVerb  = `(?:read|send|upload|forward|transmit|exfiltrate|leak|copy|dump|attach|share|post)`
)

func init() {
	// IgnoreInstructions: verb + determiners and qualifiers + noun.
	addPhrase("ignore ignores ignoring disregard disregards disregarding forget forgets forgetting override overrides overriding bypass bypasses bypassing",
		IgnoreInstructions,
		`^(ignor(?:e|es|ing)|disregard(?:s|ing)?|forget(?:s|ting)?|overrid(?:e|es|ing)|bypass(?:es|ing)?) `+
			`((?:[a-z'&-]+ ){0,6}?)`+
			`(instructions?|prompts?|directives?|rules?|directions?|guidelines?|guidance|constraints?|restrictions?|programming)\b`+
			`((?: ?[,-])? (?:above|before|earlier|previously|so far|given (?:above|before|earlier|previously|to you)|you (?:were|have been|'ve been) (?:given|told)|(?:provided|written|stated|listed) (?:above|earlier|before)))?`,
		ignoreOK)
	// "ignore the above", "forget everything you were told"
	addPhrase("ignore ignoring disregard disregarding forget forgetting", IgnoreInstructions,
		`^(?:ignor(?:e|ing)|disregard(?:ing)?|forget(?:ting)?) (?:(?:all|everything|anything|of|the|what|that|which|was|is|written|said|stated) ){0,4}`+
			`(?:above|you (?:were|have been|'ve been) (?:told|given|taught)(?: before| earlier| so far)?)(?:$|[.,;:!)]| and\b| then\b| -)`, nil)
	// "new instructions:", "updated system prompt:"
	addPhrase("new updated revised real actual hidden secret", IgnoreInstructions,
		`^(?:new|updated|revised|real|actual|hidden|secret) (?:system )?(?:instructions?|directives?|system prompt) ?(?::|follow\b|are as follows|below ?:)`, nil)
	// "system prompt:", "developer instructions:"
	addPhrase("system developer", IgnoreInstructions,
		`^(?:system|developer) (?:prompt|instructions|override|directives) ?:`, notFormat)
	// "you are now DAN", "you are now an unrestricted AI"
	addPhrase("you", IgnoreInstructions,
		`^you are now (?:dan\b|jailbroken|unrestricted|unfiltered|uncensored|free (?:from|of)\b|acting as|going to (?:act|pretend|ignore|follow|obey)\b|`+
			`in (?:developer|god|dan|jailbreak|jailbroken|unrestricted|admin|root|sudo|debug|evil|unfiltered) mode|`+
			`(?:an? |the |my )(?:[a-z'-]+ ){0,3}(?:ai|assistant|model|chatbot|bot|agent|llm|persona|character|hacker)\b|(?:an? )?(?:evil|malicious|rogue)\b)`, nil)
	addPhrase("you", IgnoreInstructions,
		`^you are no longer (?:bound by|restricted by|limited by|required to (?:follow|obey)|subject to|governed by|an? (?:ai|assistant|language model|chatbot)\b|(?:claude|chatgpt|gpt|gemini|llama|copilot)\b)`, nil)

	// ModelDirective: tags of prompt formats and of tool poisoning.
	addPhrase("<", ModelDirective,
		`^< ?/? ?(?:important|system|system[-_ ]?(?:prompt|message|instructions?|override)|instructions?|sys|`+
			`(?:secret|hidden|admin|ai|assistant|model|llm|agent|tool|special|private|mandatory|critical)[-_ ]?instructions?)(?: [a-z_:-]+ ?= ?[^<>]{0,80})? ?/?>`, nil)
	addPhrase("<", ModelDirective,
		`^(?:<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|begin_of_text|end_of_text)\|>|<< ?/?sys ?>>|</?(?:start_of_turn|end_of_turn)>)`, nil)
	addPhrase("[", ModelDirective,
		`^\[ ?/?(?:inst|system prompt|system message|system instructions?) ?\]`, nil)
	// "do not tell the user", "without telling the user"
	addPhrase("do don dont never without not", ModelDirective,
		`^(?:do not|don't|dont|never|without|not|not to) (?:ever )?(?:`+
			`(?:tell|telling|inform|informing|mention|mentioning|notify|notifying|alert|alerting|reveal|revealing|disclose|disclosing|show|showing|explain|explaining)`+
			`(?: (?:this|it|that|anything|any of this|them|these|about (?:this|it|that)))?(?: to| with)?(?: the| your)? (?:users?|human)\b|`+
			`(?:let|letting) (?:the |your )?(?:user|human) (?:know|see|notice|find out)\b|`+
			`(?:make|making) (?:the |your )?(?:user|human) aware\b)`, userOK)
	addPhrase("hide hiding keep keeping conceal concealing", ModelDirective,
		`^(?:hide|hiding|keep|keeping|conceal|concealing) (?:this|it|that|these|the (?:following|above)|everything|all (?:of )?this)`+
			`(?: (?:information|instructions?|step|steps|message|request))? (?:secret |hidden )?from (?:the |your )?(?:user|human)\b`, nil)
	addPhrase("user", ModelDirective,
		`^user (?:must not|mustn't|should not|shouldn't|must never|should never) (?:know|see|be told|be informed|find out|notice|learn)\b`, nil)
	// "before using this tool, read ~/.ssh/id_rsa"
	addPhrase("before prior", ModelDirective,
		`^(?:before|prior to) (?:using|calling|invoking|running|executing|you use|you call|you invoke) (?:this|the|any|any other|this mcp|that) (?:tool|function|server|mcp tool|command)s? ?,? `+
			`(?:you )?(?:(?:must|should|need to|have to|are required to|always|will need to) )*(?:(?:first|also|always|then) )*`+dataVerb+`\b`, nil)
	addPhrase("when whenever after", ModelDirective,
		`^(?:when|whenever|after) (?:using|calling|invoking|you use|you call|you invoke) (?:this|the|any) (?:tool|function)s? ?,? `+
			`(?:you )?(?:must|are required to|need to|have to) (?:(?:first|also|always|then) )*`+leakVerb+`\b`, nil)
	// "AI assistant: you must", "Note to the AI: ..."
	addPhrase("ai llm language large", ModelDirective,
		`^(?:ai assistant|ai agent|ai model|llm|language model|large language model)s? ?[:,!] ?(?:you )?(?:must|should|need to|have to|are required to|are instructed to|shall|always|never|do not|don't|immediately)\b`, nil)
	addPhrase("dear attention hey hello hi note message instructions instruction", ModelDirective,
		`^(?:dear|attention|hey|hello|hi|note to|message to|instructions? (?:to|for)) (?:the |all |any )?(?:ai|llm|ai assistant|ai agent|ai model|assistant|language model|chatbot|agent|model|claude|chatgpt|gpt|gemini|copilot)s? ?[:,!] ?(?:you )?(?:must|should|need to|have to|are required to|are instructed to|shall|always|never|do not|don't|immediately|please)\b`, nil)
	// "as an AI assistant you must"
	addPhrase("as", ModelDirective,
		`^as an? (?:`+modelNoun+`|assistant|agent|model) ?,? ?(?:you|your)\b ?(?:must|should|need to|have to|are required to|are obliged to|will|shall|primary|job|task|duty|goal|first)\b`, nil)
	// "If you are an AI agent reading this, ..."
	addPhrase("if", ModelDirective,
		`^if you(?: are|'re) (?:an? )?(?:`+modelNoun+`|automated (?:agent|assistant|system|tool))\b`, nil)
}

var (
	// fillerWords may stand between the verb and the noun.
	fillerWords = map[string]bool{"all": true, "any": true, "the": true, "your": true, "of": true, "these": true, "those": true,
		"my": true, "each": true, "every": true, "such": true, "and": true, "or": true, "&": true, "that": true, "this": true,
		"previously": true, "given": true, "above": true, "prior": true, "previous": true, "preceding": true, "foregoing": true,
		"earlier": true, "system": true, "system's": true, "former": true, "original": true, "initial": true, "old": true,
		"existing": true, "safety": true, "developer": true, "developer's": true, "provided": true, "current": true, "other": true,
		"aforementioned": true, "above-mentioned": true, "security": true, "default": true, "operator": true, "operator's": true,
		"admin": true, "ethical": true, "content": true, "built-in": true, "hidden": true, "core": true, "base": true}
	qualifierWords = []string{"previous", "previously", "prior", "above", "earlier", "preceding", "foregoing", "system", "system's",
		"former", "original", "initial", "old", "safety", "developer", "developer's", "given", "aforementioned", "above-mentioned",
		"operator", "operator's", "ethical", "hidden", "core"}
	allWords = []string{"all", "any", "your", "every"}
)

// ignoreOK vets "VERB ... NOUN": the words between are determiners and
// qualifiers (fillerWords); "instructions" is enough after ignore,
// disregard and forget, after override and bypass it wants a qualifier or
// all/any/your/every, as "prompts" always does; the weaker nouns (rules,
// directives, guidelines, ...) want a qualifier (previous, system, ...).
// "Override the default rules", "add ignore rules", "we ignore any rule
// that ..." and "the ignore directive" stay clean.
func ignoreOK(_, w []byte, m []int) bool {
	verb, fill, noun := w[m[2]:m[3]], w[m[4]:m[5]], w[m[6]:m[7]]
	for _, f := range bytes.Fields(fill) {
		if !fillerWords[string(f)] {
			return false
		}
	}
	qual := m[8] >= 0 || hasWord(fill, qualifierWords)
	all := hasWord(fill, allWords)
	weakVerb := bytes.HasPrefix(verb, []byte("overrid")) || bytes.HasPrefix(verb, []byte("bypass"))
	switch {
	case bytes.HasPrefix(noun, []byte("instruction")) || string(noun) == "programming":
		return qual || all || !weakVerb
	case bytes.HasPrefix(noun, []byte("prompt")):
		return qual || all
	default:
		return qual
	}
}

func hasWord(fill []byte, words []string) bool {
	for _, f := range bytes.Fields(fill) {
		for _, w := range words {
			if string(f) == w {
				return true
			}
		}
	}
	return false
}

// notFormat rejects a match followed by a format verb or a template
// slot: code logging "System prompt: %s" is not a lookalike.
func notFormat(_, w []byte, m []int) bool {
	rest := bytes.TrimLeft(w[m[1]:], " ")
	return len(rest) == 0 || bytes.IndexByte([]byte("%{$\"`'+"), rest[0]) < 0
}

// subjects: a word before "do not tell the user" that makes it a
// statement ("we do not inform the user") rather than an order.
var subjects = map[string]bool{"we": true, "i": true, "they": true, "it": true, "which": true, "that": true,
	"who": true, "he": true, "she": true, "this": true}

// userOK rejects "do not show the user's ...", "the user interface" and
// statements such as "we do not inform the user".
func userOK(pre, w []byte, m []int) bool {
	for range 2 { // "we do not", "which does not"
		pre = bytes.TrimRight(pre, " ")
		k := bytes.LastIndexByte(pre, ' ')
		if subjects[string(pre[k+1:])] {
			return false
		}
		pre = pre[:k+1]
	}
	rest := w[m[1]:]
	return !bytes.HasPrefix(rest, []byte("'")) && !bytes.HasPrefix(rest, []byte(" interface")) &&
		!bytes.HasPrefix(rest, []byte(" id")) && !bytes.HasPrefix(rest, []byte(" name"))
}

// wordStart reports whether no letter, digit or '_' precedes b[i].
func wordStart(b []byte, i int) bool {
	if i == 0 {
		return true
	}
	c := b[i-1]
	if c < utf8.RuneSelf {
		return !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_')
	}
	r, _ := utf8.DecodeLastRune(b[:i])
	return !unicode.IsLetter(r) && !unicode.IsDigit(r)
}

// scanPhrases runs the phrase rules over the folded text.
func (s *scanner) scanPhrases() {
	b := s.folded
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c == '<':
			s.try(atAngle, i)
		case c == '[':
			s.try(atBracket, i)
		case 'a' <= c && c <= 'z':
			j := i + 1
			for j < len(b) && 'a' <= b[j] && b[j] <= 'z' {
				j++
			}
			if triggerFirst[c-'a'] && j-i <= maxTrigger && wordStart(b, i) {
				if ps, ok := triggers[string(b[i:j])]; ok {
					s.try(ps, i)
				}
			}
			i = j - 1
		}
	}
}

// try runs the phrases anchored at folded[i].
func (s *scanner) try(ps []*phrase, i int) {
	w := s.folded[i:min(i+phraseWindow, len(s.folded))]
	for _, p := range ps {
		if !bytes.HasPrefix(w, p.prefix) {
			continue
		}
		m := p.re.FindSubmatchIndex(w)
		if m == nil || m[1] == 0 || p.ok != nil && !p.ok(s.folded[:i], w, m) {
			continue
		}
		s.addFolded(p.rule, i, i+m[1])
	}
}

// addFolded records a match given in folded offsets.
func (s *scanner) addFolded(r Rule, fs, fe int) {
	for fe > fs+1 && s.folded[fe-1] == ' ' {
		fe--
	}
	start := int(s.src[fs])
	last := int(s.src[fe-1])
	_, size := utf8.DecodeRuneInString(s.text[last:])
	s.add(r, start, last+size)
}
