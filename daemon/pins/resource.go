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
// itself, under the CSP, permissions and domain its "_meta.ui" asks for.
// Pinning the tool's URI alone would let a server change the page behind
// an approved URI, so what resources/read gives for a UI resource is
// pinned too, under the URI: the first read pins it (whatever the
// pin_policy but "off", as the instructions), a later different one is
// held back until approved.

// IsUIResource says whether uri names a UI resource: the scheme "ui", in
// any letter case (a URI's scheme is case-insensitive, RFC 3986 §3.1).
func IsUIResource(uri string) bool {
	return len(uri) >= len("ui://") && strings.EqualFold(uri[:len("ui://")], "ui://")
}

// maxInline is the longest string of a content item a resource's
// definition holds as it is; a longer one (a page's bundled scripts, a
// blob) is held as its SHA-256 and length, so that a definition stays
// small enough to store and review. The digest covers it all the same.
const maxInline = 64 << 10

// CanonicalResource builds the Definition of what a resources/read
// result gives for the UI resource uri: {"uri": uri, "contents": [...]},
// each content item whole (its uri, mimeType, text or blob and any other
// member) but its "_meta", of which the members pinnedMeta names are
// kept ("ui": the page's CSP, permissions, domain). A string member of
// an item longer than maxInline is held as {"sha256": ..., "bytes": N}.
// found is false when the result has no contents (an input_required
// result: nothing to render). A result that parsers could read
// differently (see wire.Tree; a lone "Contents", which Go hosts read as
// the contents and JavaScript ones do not) is refused.
func CanonicalResource(uri string, result []byte) (def Definition, found bool, err error) {
	if err := wire.Tree(result, nil); err != nil {
		return Definition{}, false, fmt.Errorf("resource: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(result))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return Definition{}, false, fmt.Errorf("resource: %w", err)
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
	display := make([]any, len(list))
	for i, it := range list {
		item, ok := it.(map[string]any)
		if !ok {
			return Definition{}, true, fmt.Errorf("resource: content %d is not an object", i)
		}
		c, shown := map[string]any{}, map[string]any{}
		for k, v := range item {
			if k == "_meta" {
				meta, err := pinnedMetaOf(v)
				if err != nil {
					return Definition{}, true, fmt.Errorf("resource: content %d: %w", i, err)
				}
				if meta != nil {
					c[k], shown[k] = meta, meta
				}
				continue
			}
			c[k], shown[k] = v, v
			if s, ok := v.(string); ok {
				switch {
				case len(s) > maxInline:
					sum := sha256.Sum256([]byte(s))
					c[k] = map[string]any{"sha256": hex.EncodeToString(sum[:]), "bytes": len(s)}
					shown[k] = c[k]
				case strings.Contains(s, "\n") && item[k+" (lines)"] == nil:
					// Shown line by line, so that a diff shows the lines
					// of a page that changed (the digest is of the string).
					shown[k+" (lines)"] = strings.Split(s, "\n")
					delete(shown, k)
				}
			}
		}
		items[i], display[i] = c, shown
	}
	compact, err := json.Marshal(map[string]any{"uri": uri, "contents": items}) // keys sorted at every depth
	if err != nil {
		return Definition{}, true, fmt.Errorf("resource: %w", err)
	}
	if len(compact) > MaxDefinition {
		return Definition{}, true, fmt.Errorf("resource of %d bytes once its long strings are digests: at most %d can be pinned", len(compact), MaxDefinition)
	}
	sum := sha256.Sum256(compact)
	// Shown as written (a page's "<" not as "\u003c"); values decoded
	// from JSON: cannot fail.
	var pretty bytes.Buffer
	enc := json.NewEncoder(&pretty)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(map[string]any{"uri": uri, "contents": display})
	return Definition{Digest: "sha256:" + hex.EncodeToString(sum[:]), JSON: strings.TrimSuffix(pretty.String(), "\n")}, true, nil
}
