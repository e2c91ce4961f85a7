package clientsetup

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/mcpcage/mcpcage/internal/jsonsplice"
)

// entry is one server of a client's file, as the client reads it.
type entry struct {
	Command string
	Args    []string
	Env     map[string]string
	Cwd     string
	Type    string
	URL     string
	Server  string // "serverUrl"
	Headers map[string]string
}

// entryKey is a member of an entry that setup reads.
type entryKey string

const (
	keyCommand   entryKey = "command"
	keyArgs      entryKey = "args"
	keyEnv       entryKey = "env"
	keyCwd       entryKey = "cwd"
	keyType      entryKey = "type"
	keyURL       entryKey = "url"
	keyServerURL entryKey = "serverUrl"
	keyHeaders   entryKey = "headers"
)

// decodeEntry reads an entry's members by their exact names, as the
// clients (JavaScript's JSON.parse) do; encoding/json matches names in
// any case, the last match winning, so an entry with "command" and
// "COMMAND" read as the one while the client ran the other. An entry
// with a member whose name equals one of those keys only when case is
// ignored is refused: refused says why (and err is nil). err is a
// member of the wrong type.
func decodeEntry(raw []byte) (e entry, refused string, err error) {
	members, ok := jsonsplice.Members(raw)
	if !ok {
		return e, "", fmt.Errorf("not a JSON object")
	}
	names := make([]string, 0, len(members))
	for n := range members {
		names = append(names, n)
	}
	sort.Strings(names)
	fields := map[entryKey]any{keyCommand: &e.Command, keyArgs: &e.Args, keyEnv: &e.Env, keyCwd: &e.Cwd,
		keyType: &e.Type, keyURL: &e.URL, keyServerURL: &e.Server, keyHeaders: &e.Headers}
	for _, n := range names {
		for k, field := range fields {
			switch {
			case n == string(k):
				if err := json.Unmarshal(members[n].Of(raw), field); err != nil {
					return entry{}, "", fmt.Errorf("%q: %v", n, err)
				}
			case strings.EqualFold(n, string(k)):
				return entry{}, fmt.Sprintf("has a member %q, which the client does not read as %q but other readers of the file do: NOT through mcpcage, and left as it is; remove %q (or write it %q), then run setup again", n, k, n, k), nil
			}
		}
	}
	return e, "", nil
}
