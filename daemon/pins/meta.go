package pins

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// A tool's "_meta" is free but for the members that hosts read as
// behaviour: the UI of MCP Apps (the "io.modelcontextprotocol/ui"
// extension, SEP-1865) and of the OpenAI Apps SDK. A host renders the
// resource a tool names as the tool's interactive UI (which can call
// tools itself), and keeps from the model the tools whose visibility
// says so; a server that named another resource, or widened who may
// call a tool, between two sessions would change what the host and the
// agent do with no pinned change.

// uiNames are the names of the extension's object in "_meta": "ui" (the
// specification's) and the extension's identifier, which some hosts
// read instead.
var uiNames = []string{"ui", "io.modelcontextprotocol/ui"}

// pinnedMeta says whether the member name of a tool's "_meta" object is
// part of the tool's definition: one of uiNames (resourceUri,
// visibility, and whatever else the extension puts there), a name that
// begins with one of them and "/" or "." (the deprecated flat
// "ui/resourceUri", and "ui.resourceUri", which some hosts read), a name
// in the "openai/" namespace ("openai/outputTemplate",
// "openai/widgetAccessible", "openai/visibility"...), and "__proto__"
// (a JavaScript host that copies "_meta" by assignment makes its value
// the copy's prototype, whose "ui" the copy then reads). Names are
// matched in any letter case: a host decoding "_meta" into a Go struct
// reads "UI" as "ui".
func pinnedMeta(name string) bool {
	for _, ui := range uiNames {
		if strings.EqualFold(name, ui) || equalFoldPrefix(name, ui+"/") || equalFoldPrefix(name, ui+".") {
			return true
		}
	}
	return equalFoldPrefix(name, "openai/") || name == "__proto__"
}

// equalFoldPrefix says whether s begins with prefix, letter case aside
// (Unicode simple folding, as strings.EqualFold).
func equalFoldPrefix(s, prefix string) bool {
	for _, p := range prefix {
		r, n := utf8.DecodeRuneInString(s)
		if n == 0 || !strings.EqualFold(string(r), string(p)) {
			return false
		}
		s = s[n:]
	}
	return true
}

// Where hosts look for what a tool's UI is: its resource in the
// extension's object (uiNames) as "resourceUri" (the specification's)
// or "uri", or in the flat "_meta" members "ui/resourceUri" (deprecated,
// read when the nested one is absent) and "ui.resourceUri"; its
// visibility in the extension's object.
var (
	uiResourceNested = []string{"resourceUri", "uri"}
	uiResourceFlat   = []string{"ui/resourceUri", "ui.resourceUri"}
)

// pinnedMetaOf returns the members of a tool's "_meta" value that are
// part of its definition (nil when it has none, or is not an object:
// a host reads no UI out of a string or an array). A tool whose UI
// hosts could read differently is refused: one that names its resource
// in more than one place, differently (the ext-apps SDK prefers the
// nested one, other hosts the flat one or the extension's identifier),
// or whose "ui" and "io.modelcontextprotocol/ui" objects give different
// visibilities (one left out counts: it means "model" and "app"); else
// a review could approve one UI and the host use another.
func pinnedMetaOf(meta any) (map[string]any, error) {
	obj, ok := meta.(map[string]any)
	if !ok {
		return nil, nil
	}
	var pinned map[string]any
	for name, v := range obj {
		if pinnedMeta(name) {
			if pinned == nil {
				pinned = map[string]any{}
			}
			pinned[name] = v
		}
	}
	resource, visibility := agreement{what: "UI resource"}, agreement{what: "visibility"}
	for _, name := range slices.Sorted(maps.Keys(pinned)) {
		v := pinned[name]
		for _, flat := range uiResourceFlat {
			if strings.EqualFold(name, flat) {
				if err := resource.add(fmt.Sprintf("_meta[%q]", name), v, true); err != nil {
					return nil, err
				}
			}
		}
		ui, ok := v.(map[string]any)
		if !ok || !slices.ContainsFunc(uiNames, func(n string) bool { return strings.EqualFold(name, n) }) {
			continue
		}
		at := fmt.Sprintf("_meta[%q]", name)
		var vis any
		visGiven := false
		for _, inner := range slices.Sorted(maps.Keys(ui)) {
			if slices.ContainsFunc(uiResourceNested, func(n string) bool { return strings.EqualFold(inner, n) }) {
				if err := resource.add(fmt.Sprintf("%s.%s", at, inner), ui[inner], true); err != nil {
					return nil, err
				}
			}
			if strings.EqualFold(inner, "visibility") {
				vis, visGiven = ui[inner], true
			}
		}
		if err := visibility.add(at+".visibility", vis, visGiven); err != nil {
			return nil, err
		}
	}
	return pinned, nil
}

// agreement checks that every place a host may read one thing from
// holds the same value.
type agreement struct {
	what  string
	first string // the value at the first place seen, as JSON; "" for none
	at    string // that place
	seen  bool
}

// add is one more place, at, holding v (given: else it is left out,
// which differs from every value).
func (a *agreement) add(at string, v any, given bool) error {
	var b []byte
	if given {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return err
		}
	}
	if !a.seen {
		a.first, a.at, a.seen = string(b), at, true
		return nil
	}
	if string(b) != a.first {
		return fmt.Errorf("the tool gives its %s differently at %s (%s) and at %s (%s): hosts read one or the other", a.what, a.at, shown(a.first), at, shown(string(b)))
	}
	return nil
}

// shown is a value of an agreement for a message.
func shown(v string) string {
	if v == "" {
		return "left out"
	}
	return v
}
