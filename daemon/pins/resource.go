package pins

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// A UI resource (MCP Apps: the ui:// resource a tool's "_meta.ui" names)
// is a page the host renders and runs, which can call the server's tools
// itself, under the CSP, permissions and domain its "_meta.ui" asks for,
// in the content resources/read gives or, failing that, in the resource's
// resources/list entry. Pinning the tool's URI alone would let a server
// change the page behind an approved URI, so what resources/read gives
// for a UI resource is pinned too, under the URI, and what its list entry
// asks for under Listed(URI): the first seen is pinned (whatever the
// pin_policy but "off", as the instructions), a later different one is
// held back until approved.

// IsUIResource says whether uri names a UI resource: the scheme "ui", in
// any letter case (a URI's scheme is case-insensitive, RFC 3986 §3.1).
// A tool so named is held back: it would share the resource's pin.
func IsUIResource(uri string) bool {
	return len(uri) >= len("ui://") && strings.EqualFold(uri[:len("ui://")], "ui://")
}

// Listed is the name the resources/list entry of the UI resource uri is
// pinned under (no URI holds a space, so no read's pin is named so).
func Listed(uri string) string { return uri + " (listed)" }

// maxInline is the longest string member of a content item a
// resource's definition holds as it is; a longer one (a page's bundled
// scripts, a blob) is held as its SHA-256 and length, so that a
// definition stays small enough to store and review. The digest covers
// it all the same.
const maxInline = 64 << 10

// maxResourceValues bounds the JSON values of a result that is pinned:
// decoding builds each (found by a red-team helper: 32 MiB of empty
// objects took 1.2 GiB and 8 s), and a definition of MaxDefinition bytes
// cannot hold more than this many.
const maxResourceValues = MaxDefinition / 2

// Tags of the member values of a content item in a resource's
// definition that are not shown as themselves: every array is tagged, so
// that no value a server sends reads as a tagged one.
const (
	tagDigest = "sha256" // ["sha256", hex, bytes]: a string over maxInline
	tagLines  = "lines"  // ["lines", line...]: a string of several lines (shown so only)
	tagArray  = "array"  // ["array", [...]]: an array
)

// CanonicalResource builds the Definition of what a resources/read
// result gives for the UI resource uri: {"uri": uri, "contents": [...]},
// each content item whole (its uri, mimeType, text or blob and any other
// member, "meta" included) but for its "_meta", which is kept with the
// members pinnedMeta names only ("ui": the page's CSP, permissions,
// domain), as {} when it has none, and as it is when it is not an
// object (so that a host reading `_meta || meta` reads the same one). A
// string member of an item over maxInline is held as ["sha256", hex,
// length], an array member as ["array", [...]]. found is false when the
// result has no contents (an input_required result: nothing to render).
// A result that parsers could read differently (see wire.Tree; a lone
// "Contents", which Go hosts read as the contents and JavaScript ones do
// not), or too large to decode cheaply, is refused.
func CanonicalResource(uri string, result []byte) (def Definition, found bool, err error) {
	all, err := decodeBounded("resource", result)
	if err != nil {
		return Definition{}, false, err
	}
	var contents any
	for k, v := range all {
		switch {
		case k == "contents":
			contents, found = v, true
		case strings.EqualFold(k, "contents"):
			return Definition{}, false, fmt.Errorf("resource: member %q, which hosts read differently (Go ones as the contents)", k)
		}
	}
	if !found {
		return Definition{}, false, nil
	}
	list, ok := contents.([]any)
	if !ok {
		return Definition{}, true, fmt.Errorf("resource: its contents are not an array")
	}
	items := make([]any, len(list))
	shown := make([]any, len(list))
	for i, it := range list {
		item, ok := it.(map[string]any)
		if !ok {
			return Definition{}, true, fmt.Errorf("resource: content %d is not an object", i)
		}
		if items[i], err = canonicalMembers(item); err != nil {
			return Definition{}, true, fmt.Errorf("resource: content %d: %w", i, err)
		}
		shown[i] = showLines(items[i].(map[string]any))
	}
	def, err = definitionOf(map[string]any{"uri": uri, "contents": items}, map[string]any{"uri": uri, "contents": shown})
	return def, true, err
}

// CanonicalListing builds the Definition of what the resources/list
// entry of the UI resource uri asks of a host: its "_meta" as
// CanonicalResource keeps an item's (a host falls back to it for the
// page's CSP, permissions and domain), "meta", the members a JavaScript
// host copying the entry by assignment would read through its prototype
// ("__proto__", "constructor", "prototype"), and its mimeType. The rest
// of the entry (name, description, annotations, size) is the server's to
// change. asks says whether the entry asks for anything beyond its
// mimeType: a pinned member in "_meta", or any of the others.
func CanonicalListing(uri string, entry []byte) (def Definition, asks bool, err error) {
	all, err := decodeBounded("resource list entry", entry)
	if err != nil {
		return Definition{}, false, err
	}
	kept := map[string]any{}
	for k, v := range all {
		if strings.EqualFold(k, "mimeType") || strings.EqualFold(k, "_meta") || strings.EqualFold(k, "meta") || k == "__proto__" || k == "constructor" || k == "prototype" {
			kept[k] = v
		}
	}
	m, err := canonicalMembers(kept)
	if err != nil {
		return Definition{}, false, fmt.Errorf("resource list entry: %w", err)
	}
	for k, v := range m {
		switch {
		case strings.EqualFold(k, "mimeType"):
		case k == "_meta":
			meta, ok := v.(map[string]any) // what pinnedMeta keeps of it
			asks = asks || ok && len(meta) > 0
		default:
			asks = true
		}
	}
	m["uri"] = uri
	def, err = definitionOf(m, m)
	return def, asks, err
}

// decodeBounded decodes the JSON object b (what, in errors), numbers as
// written, once wire.TreeValues has found it unambiguous and of at most
// maxResourceValues values.
func decodeBounded(what string, b []byte) (map[string]any, error) {
	values, err := wire.TreeValues(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if values > maxResourceValues {
		return nil, fmt.Errorf("%s of %d JSON values: at most %d can be pinned", what, values, maxResourceValues)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if all == nil {
		return nil, fmt.Errorf("%s: not an object", what)
	}
	return all, nil
}

// canonicalMembers is item as its definition holds it (see
// CanonicalResource).
func canonicalMembers(item map[string]any) (map[string]any, error) {
	c := make(map[string]any, len(item))
	for k, v := range item {
		switch v := v.(type) {
		case string:
			if len(v) > maxInline {
				sum := sha256.Sum256([]byte(v))
				c[k] = []any{tagDigest, hex.EncodeToString(sum[:]), len(v)}
				continue
			}
		case []any:
			c[k] = []any{tagArray, v}
			continue
		case map[string]any:
			if k == "_meta" {
				meta, err := pinnedMetaOf(v)
				if err != nil {
					return nil, err
				}
				if meta == nil {
					meta = map[string]any{}
				}
				c[k] = meta
				continue
			}
		}
		c[k] = v
	}
	return c, nil
}

// showLines is the canonical item c as a review shows it: a string member
// of several lines as ["lines", line...], so that a diff shows the lines
// of a page that changed.
func showLines(c map[string]any) map[string]any {
	shown := make(map[string]any, len(c))
	for k, v := range c {
		if s, ok := v.(string); ok && strings.Contains(s, "\n") {
			lines := []any{tagLines}
			for _, l := range strings.Split(s, "\n") {
				lines = append(lines, l)
			}
			shown[k] = lines
			continue
		}
		shown[k] = v
	}
	return shown
}

// definitionOf is the Definition of the canonical value v: its digest
// (of v compact), and shown (or v, when shown would be over
// MaxDefinition) as a review sees it.
func definitionOf(v, shown any) (Definition, error) {
	compact, err := json.Marshal(v) // keys sorted at every depth
	if err != nil {
		return Definition{}, err
	}
	if len(compact) > MaxDefinition {
		return Definition{}, fmt.Errorf("a definition of %d bytes once its long strings are digests: at most %d can be pinned", len(compact), MaxDefinition)
	}
	sum := sha256.Sum256(compact)
	text := indent(shown)
	if len(text) > MaxDefinition {
		text = indent(v) // a page of very many short lines
	}
	if len(text) > 2*MaxDefinition {
		text = string(compact) // deeply nested: indenting multiplies it
	}
	return Definition{Digest: "sha256:" + hex.EncodeToString(sum[:]), JSON: text}, nil
}

// indent is v indented, as written (a page's "<" not as "\u003c").
func indent(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // values decoded from JSON: cannot fail
	return strings.TrimSuffix(b.String(), "\n")
}
