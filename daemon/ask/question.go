package ask

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"

	"golang.org/x/text/unicode/norm"

	"github.com/mcpcage/mcpcage/api"

	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/internal/invisible"
)

// Question is what the user is asked: who wants what, with which
// arguments (already redacted and cut by the caller), in which session.
type Question struct {
	Agent, User, Server string
	Method              string // the request's method
	Kind                string // tool, resource, prompt
	Name                string
	Annotations         string // the tool's annotations as the server declared them (untrusted), "" when none
	Arguments           string // redacted, at most MaxArguments bytes
	Code                string // the session's question code
	For                 string // what "for a while" means, e.g. "8h0m0s"
	// NoDuration leaves "for a while" out: the agent is a bare
	// interpreter, which any script of the user's could be.
	NoDuration bool
	// Flow, when set, is the data-flow guard's warning about the call
	// (a [[flow]] rule with action "ask").
	Flow string
	// OnceOnly offers only "once" and "deny": the data-flow guard asks
	// about one call, never a consent for more.
	OnceOnly bool
}

// MaxArguments bounds the arguments shown in a question.
const MaxArguments = 1024

// MaxName bounds the name (of a tool, prompt, resource) a question
// shows.
const MaxName = 200

// Title starts every question mcpcage asks; with the session's code it
// is the mark a server's own elicitation may not imitate.
const Title = "mcpcage consent question"

// the answer's field in the form.
const decisionField = "decision"

// Message is the question's text.
func (q Question) Message() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [code %s, shown by `mcpcage sessions`]\n", Title, q.Code)
	verb := map[request.Method]string{request.ToolsCall: "call tool", request.ResourcesRead: "read resource", request.ResourcesSubscribe: "subscribe to resource",
		request.PromptsGet: "get prompt", request.CompletionComplete: "complete an argument of " + q.Kind}[request.Method(q.Method)]
	if verb == "" {
		verb = q.Method + " on " + q.Kind
	}
	fmt.Fprintf(&b, "Agent %s wants to %s %q of server %s on behalf of %s.", visible(q.Agent), verb, q.Name, q.Server, q.User)
	if q.Annotations != "" {
		fmt.Fprintf(&b, "\nThe server says the tool is (unverified): %s.", q.Annotations)
	}
	if q.Arguments != "" {
		fmt.Fprintf(&b, "\nArguments (secrets redacted): %s", visible(q.Arguments))
	}
	if q.Flow != "" {
		fmt.Fprintf(&b, "\nData flow: %s.", q.Flow)
	}
	b.WriteString("\nAllow it?")
	return b.String()
}

// visible writes the invisible characters of s (format characters such as
// bidi overrides and zero-width ones, and others that print nothing) as
// JSON escapes (\u202e; pairs beyond the BMP): shown exactly, and a
// right-to-left override cannot reorder what the user reads. JSON text
// stays JSON.
func visible(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x7f || !invisible.Rune(r) {
			b.WriteRune(r)
			continue
		}
		if r > 0xffff {
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, "\\u%04x\\u%04x", hi, lo)
			continue
		}
		fmt.Fprintf(&b, "\\u%04x", r)
	}
	return b.String()
}

// Elicitation returns the params of an elicitation/create (form mode)
// that asks q: a single choice among the answers.
func (q Question) Elicitation() json.RawMessage {
	enum := []string{string(api.AnswerOnce), string(api.AnswerSession), string(api.AnswerDuration), string(api.AnswerDeny)}
	names := []string{"Allow once", "Allow for this session", "Allow for " + q.For, "Deny"}
	desc := "once: this call only; session: every call of this agent's session; duration: every call for " + q.For + "; deny: refuse (not asked again for " + q.For + ")"
	if q.OnceOnly {
		enum = []string{string(api.AnswerOnce), string(api.AnswerDeny)}
		names = []string{"Allow this call once", "Deny"}
		desc = "once: this call only; deny: refuse it"
	} else if q.NoDuration {
		enum = slices.Delete(enum, 2, 3)
		names = slices.Delete(names, 2, 3)
		desc = "once: this call only; session: every call of this agent's session; deny: refuse (not asked again for " + q.For + ")"
	}
	schema := map[string]any{
		"type": "object",
		"properties": map[string]any{
			decisionField: map[string]any{
				"type":        "string",
				"title":       "Your answer",
				"description": desc,
				"enum":        enum,
				"enumNames":   names,
			},
		},
		"required": []string{decisionField},
	}
	b, _ := json.Marshal(map[string]any{"mode": "form", "message": q.Message(), "requestedSchema": schema})
	return b
}

// Outcome is what became of a question.
type Outcome string

const (
	Answered  Outcome = "answered"  // the user chose an answer
	Dismissed Outcome = "dismissed" // the user cancelled the question without choosing
	Unusable  Outcome = "unusable"  // the reply could not be read
)

// Bounds of what is decoded of questions and answers (found by a red-team
// helper: a 16 MiB question or answer was decoded whole, 800 MiB): a
// server's question (elicitation/create params) and the client's answer
// to one of mcpcage's.
const (
	MaxQuestionBytes = 256 << 10
	MaxAnswerBytes   = 64 << 10
)

// ParseAnswer reads an elicitation result ({"action": ..., "content":
// {"decision": ...}}): decline counts as deny, cancel as dismissed.
func ParseAnswer(result []byte) (api.Answer, Outcome) {
	if len(result) > MaxAnswerBytes {
		return "", Unusable // not an answer to mcpcage's one-field form
	}
	var r struct {
		Action  string         `json:"action"`
		Content map[string]any `json:"content"`
	}
	if json.Unmarshal(result, &r) != nil {
		return "", Unusable
	}
	switch r.Action {
	case "decline":
		return api.AnswerDeny, Answered
	case "cancel":
		return "", Dismissed
	case "accept":
		s, _ := r.Content[decisionField].(string)
		if a := api.Answer(s); a.Valid() {
			return a, Answered
		}
	}
	return "", Unusable
}

// NewCode returns a session's question code: 6 characters from an
// alphabet without look-alikes, as "K7Q-2MX".
func NewCode() string {
	const alphabet = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
	var b [6]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 7)
	for i, c := range b {
		if i == 3 {
			out = append(out, '-')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}

// Imitates reports whether text (a server's elicitation, whole) could
// pass for one of mcpcage's questions: it names mcpcage, or carries the
// session's code, in any case, width or spacing.
func Imitates(text, code string) bool {
	folded := fold(text)
	return strings.Contains(folded, "mcpcage") || (code != "" && strings.Contains(folded, fold(code)))
}

// fold keeps the letters and digits of s, compatibility-normalised and
// lower-cased (so "ＭＣＰ cage" and "m.c.p-c.a.g.e" read "mcpcage").
func fold(s string) string {
	s = norm.NFKC.String(s)
	var b strings.Builder
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// ImitatesJSON is Imitates over every string (member names included) of
// a JSON document as a client decodes it, so escapes hide nothing. A
// document that cannot be read counts as an imitation.
func ImitatesJSON(doc []byte, code string) bool {
	if len(doc) > MaxQuestionBytes {
		return true // not read: callers refuse it for its size first
	}
	var v any
	if json.Unmarshal(doc, &v) != nil {
		return true
	}
	var b strings.Builder
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			b.WriteString(x)
			b.WriteByte(' ')
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				b.WriteString(k)
				b.WriteByte(' ')
				walk(e)
			}
		}
	}
	walk(v)
	return Imitates(b.String(), code)
}

// ExactNumbers reports whether every number in the JSON document doc is
// written the way it will be shown and digested: as the shortest text of
// the double it parses to (0.1, 1e+21, 1.0 all are; 9007199254740993 and
// 0.10000000000000000555 are not: servers that read numbers exactly would
// run another value than the user saw). A document that cannot be read
// counts as inexact.
func ExactNumbers(doc []byte) bool {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return false
	}
	var exact func(any) bool
	exact = func(v any) bool {
		switch x := v.(type) {
		case json.Number:
			f, err := strconv.ParseFloat(string(x), 64)
			if err != nil {
				return false
			}
			lit, ok1 := new(big.Rat).SetString(string(x))
			short, ok2 := new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 64))
			return ok1 && ok2 && lit.Cmp(short) == 0
		case []any:
			for _, e := range x {
				if !exact(e) {
					return false
				}
			}
		case map[string]any:
			for _, e := range x {
				if !exact(e) {
					return false
				}
			}
		}
		return true
	}
	return exact(v)
}
