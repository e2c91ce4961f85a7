// Package request reads what a policy decision needs from an MCP request
// (which tool, resource or prompt it targets, and a call's arguments) in
// the one way every mainstream JSON parser agrees on, or refuses it.
//
// The policy and the server must read the same message. They would not if
// the policy used Go's encoding/json on structs (it matches member names
// case-insensitively, as mcp-go servers do, while JavaScript and Python
// servers match exactly) or if the message had duplicate members. So a
// request that needs a decision is read with the strict rules of package
// wire at every level the decision reads:
//
//   - params: no two members whose names are equal after unescaping or
//     differ only in letter case; the names the method reads (name,
//     arguments, uri, ref, _meta, ...) spelled exactly, without escapes;
//   - ref (completions): the same, for type, name and uri;
//   - arguments: the same at every depth, for every name a consent
//     condition may read ([consent.Condition.Names]);
//   - every other value in params: no duplicate or case-colliding names,
//     no string with an unpaired surrogate escape;
//   - a resource URI (resources/read and subscribe, a completion's
//     ref.uri, subscriptions/listen's resourceSubscriptions): in normal
//     form ([uri.Check]), since the server's SDK may serve the URI it
//     normalizes it to, file:///work/../etc as file:///etc.
//
// A request that breaks a rule is ambiguous ([wire.ErrAmbiguous]); one that
// lacks what the method needs is malformed ([ErrMalformed]). Both are
// refused before any server sees them.
package request

import (
	"errors"
	"fmt"

	"github.com/mcpcage/mcpcage/daemon/uri"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Method is an MCP method the policy reads: one whose requests need a
// decision, or whose responses it reads or rewrites.
type Method string

// The methods a decision covers, then those whose responses the policy
// reads or rewrites (lists it filters, handshakes whose instructions it
// scans).
const (
	ToolsCall            Method = "tools/call"
	ResourcesRead        Method = "resources/read"
	ResourcesSubscribe   Method = "resources/subscribe"
	ResourcesUnsubscribe Method = "resources/unsubscribe"
	PromptsGet           Method = "prompts/get"
	CompletionComplete   Method = "completion/complete"

	ToolsList              Method = "tools/list"
	PromptsList            Method = "prompts/list"
	ResourcesList          Method = "resources/list"
	ResourcesTemplatesList Method = "resources/templates/list"
	Initialize             Method = "initialize"
	ServerDiscover         Method = "server/discover"
	// TasksResult answers with the result of a task-augmented request (a
	// tools/call with params.task, whose own response is only the task's
	// handle): for a tool, the tool's result.
	TasksResult Method = "tasks/result"
	// TasksGet, TasksList and TasksCancel answer with tasks' status
	// (status, statusMessage), not their results.
	TasksGet    Method = "tasks/get"
	TasksList   Method = "tasks/list"
	TasksCancel Method = "tasks/cancel"
)

// TargetKind is what a request acts on.
type TargetKind uint8

// Target kinds.
const (
	Tool TargetKind = iota + 1
	Resource
	Prompt
)

// Target is what a decision reads of one request.
type Target struct {
	Kind TargetKind
	Name string         // tool or prompt name, or resource URI
	Args map[string]any // tools/call arguments; nil when absent or unread
	// Unread, when the arguments hold more than MaxArgumentValues values,
	// is how many: they were checked but not decoded (Args is nil), and
	// RawArgs are their bytes as sent. What needs their values (a
	// consent's condition, a question) cannot have them.
	Unread  int
	RawArgs []byte
}

// MaxArgumentValues bounds the values of a call's arguments that are
// decoded for its decision: decoding builds a Go value per JSON value, and
// one call of 60 MiB of small values took 2.4 GiB and 9 s of the daemon
// (left in an earlier note), which every user may send, as often as they
// like, in up to max_sessions_per_user sessions at once. Arguments past it
// are checked as strictly but not decoded.
const MaxArgumentValues = 1 << 14

// UnreadReason says why a call's arguments were not read (t.Unread > 0).
func (t Target) UnreadReason() string {
	if t.Unread == 0 {
		return ""
	}
	return fmt.Sprintf("its arguments hold %d values, more than the %d mcpcage reads", t.Unread, MaxArgumentValues)
}

// ErrMalformed wraps errors for requests that lack what their method needs.
var ErrMalformed = errors.New("malformed request")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// NeedsDecision reports whether requests of method must be decided.
func NeedsDecision(method string) bool {
	switch Method(method) {
	case ToolsCall, ResourcesRead, ResourcesSubscribe, PromptsGet, CompletionComplete:
		return true
	}
	return false
}

// Names the decision reads in params, per method, and inside a ref.
var (
	toolParams       = []string{"name", "arguments", "_meta", "task"}
	resourceParams   = []string{"uri", "_meta"}
	promptParams     = []string{"name", "arguments", "_meta"}
	completionParams = []string{"ref", "argument", "context", "_meta"}
	refNames         = []string{"type", "name", "uri"}
	// metaNames are the _meta keys mcpcage reads (claims, progress).
	metaNames = []string{"progressToken", "io.modelcontextprotocol/protocolVersion", "io.modelcontextprotocol/clientInfo"}
)

// Read reads the target of a request of method (one NeedsDecision accepts)
// from its raw params (empty when absent). argNames are the argument names
// a condition may read.
func Read(method string, params []byte, argNames []string) (Target, error) {
	var read []string
	var t Target
	switch Method(method) {
	case ToolsCall:
		read, t.Kind = toolParams, Tool
	case ResourcesRead, ResourcesSubscribe:
		read, t.Kind = resourceParams, Resource
	case PromptsGet:
		read, t.Kind = promptParams, Prompt
	case CompletionComplete:
		read = completionParams
	default:
		return Target{}, fmt.Errorf("method %q needs no decision", method)
	}
	if len(params) == 0 || params[0] != '{' {
		return Target{}, malformed("%s needs params as an object", method)
	}
	members, err := wire.Object(params, read)
	if err != nil {
		return Target{}, err
	}
	// Everything below params is checked too: a member the decision does
	// not read may still be read by the server.
	argValues := 0
	for name, sp := range members {
		deep := []string(nil)
		switch name {
		case "arguments":
			deep = argNames
		case "ref":
			deep = refNames
		case "_meta":
			deep = metaNames
		}
		n, err := wire.TreeValues(sp.Of(params), deep)
		if err != nil {
			return Target{}, fmt.Errorf("params.%s: %w", name, err)
		}
		if name == "arguments" {
			argValues = n
		}
	}
	switch t.Kind {
	case Tool:
		if t.Name, err = nonEmptyString(params, members, "name"); err != nil {
			return Target{}, err
		}
		err = t.readArguments(method, params, members, argValues)
	case Resource:
		t.Name, err = resourceURI(params, members, "params.uri")
	case Prompt:
		if t.Name, err = nonEmptyString(params, members, "name"); err == nil {
			err = t.readArguments(method, params, members, argValues)
		}
	default:
		t, err = completionTarget(params, members)
	}
	if err != nil {
		return Target{}, err
	}
	return t, nil
}

// readArguments sets t.Args from params.arguments, which hold values
// values: decoded, or, past MaxArgumentValues, only noted (t.Unread,
// t.RawArgs; they must still be an object).
func (t *Target) readArguments(method string, params []byte, members map[string]wire.Span, values int) error {
	if values <= MaxArgumentValues {
		var err error
		t.Args, err = objectArguments(method, params, members)
		return err
	}
	raw := members["arguments"].Of(params)
	if raw[0] != '{' {
		return malformed("%s params.arguments must be an object", method)
	}
	t.Unread, t.RawArgs = values, raw
	return nil
}

// objectArguments decodes params.arguments (nil when absent or null),
// which must be an object.
func objectArguments(method string, params []byte, members map[string]wire.Span) (map[string]any, error) {
	sp, ok := members["arguments"]
	if !ok || string(sp.Of(params)) == "null" {
		return nil, nil
	}
	v, err := wire.Decode(sp.Of(params))
	if err != nil {
		return nil, fmt.Errorf("params.arguments: %w", err)
	}
	args, ok := v.(map[string]any)
	if !ok {
		return nil, malformed("%s params.arguments must be an object", method)
	}
	return args, nil
}

// completionTarget reads a completion's ref: a prompt by name or a
// resource (template) by URI.
func completionTarget(params []byte, members map[string]wire.Span) (Target, error) {
	sp, ok := members["ref"]
	if !ok {
		return Target{}, malformed("completion/complete needs params.ref")
	}
	ref := sp.Of(params)
	if ref[0] != '{' {
		return Target{}, malformed("completion/complete params.ref must be an object")
	}
	rm, err := wire.Object(ref, refNames)
	if err != nil {
		return Target{}, err
	}
	typ, err := nonEmptyString(ref, rm, "type")
	if err != nil {
		return Target{}, err
	}
	switch typ {
	case "ref/prompt":
		name, err := nonEmptyString(ref, rm, "name")
		return Target{Kind: Prompt, Name: name}, err
	case "ref/resource":
		u, err := resourceURI(ref, rm, "params.ref.uri")
		return Target{Kind: Resource, Name: u}, err
	}
	return Target{}, malformed("completion/complete params.ref.type %q is neither ref/prompt nor ref/resource", typ)
}

// resourceURI reads member uri of obj (at field) as a resource URI: a
// non-empty string in normal form. A URI a server's SDK would read as
// another one (file:///work/../etc) is ambiguous: the decision would be
// on one resource and the server would serve another.
func resourceURI(obj []byte, members map[string]wire.Span, field string) (string, error) {
	u, err := nonEmptyString(obj, members, "uri")
	if err != nil {
		return "", err
	}
	if err := checkURI(u); err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	return u, nil
}

// checkURI refuses a resource URI that is not in normal form, as
// ambiguous.
func checkURI(u string) error {
	if err := uri.Check(u); err != nil {
		return &wire.AmbiguityError{Problem: err.Error()}
	}
	return nil
}

// nonEmptyString reads member name of obj as a non-empty string.
func nonEmptyString(obj []byte, members map[string]wire.Span, name string) (string, error) {
	sp, ok := members[name]
	if !ok {
		return "", malformed("params.%s is missing", name)
	}
	raw := sp.Of(obj)
	if raw[0] != '"' {
		return "", malformed("params.%s must be a string", name)
	}
	v, err := wire.String(raw)
	if err != nil {
		return "", fmt.Errorf("params.%s: %w", name, err)
	}
	if v == "" {
		return "", malformed("params.%s is empty", name)
	}
	return v, nil
}
