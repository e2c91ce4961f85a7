// Package pins keeps the definition of every tool a server has shown, so
// that a server cannot change a tool under an agent that trusts it (a
// "rug pull"): the first definition seen is pinned; a later, different
// one is quarantined until a person approves it.
//
// A definition is the tool object (name, title, description, input and
// output schemas, annotations, and any other member) but "icons" and
// most of "_meta", in canonical form (members sorted, numbers as
// written, no insignificant space); its pin is the SHA-256 of that form.
// Only those two, spelled exactly so, may change freely (but for what of
// "_meta" a host acts on, below): a "Description" member, which Go
// clients read as the description, is part of the definition. Of a
// "_meta" object, the members that say what a host does
// with the tool are part of it (see pinnedMeta): "ui" and
// "io.modelcontextprotocol/ui" (MCP Apps: the ui:// resource rendered as
// the tool's interactive UI, and the tool's visibility to the model and
// to apps), any member whose name begins with one of them and "/" or "."
// (the deprecated flat "ui/resourceUri"), any "openai/" member (the
// OpenAI Apps SDK's "openai/outputTemplate", "openai/widgetAccessible"...),
// in any letter case, and "__proto__"; the definition then holds "_meta"
// with those members only. A tool without them, or whose "_meta" is not
// an object, has the definition (and the pin) it had before they were
// pinned. A tool whose UI hosts could read differently (its resource
// named differently at _meta.ui.resourceUri and _meta["ui/resourceUri"],
// say, or "ui" and "io.modelcontextprotocol/ui" with other visibilities)
// is refused. The ui:// resource itself (its HTML, and the CSP and
// permissions its resources/read gives) is pinned under its URI (see
// CanonicalResource), and what its resources/list entry asks for under
// Listed(URI) (see CanonicalListing).
//
// Pins live in one JSON file, replaced atomically (written beside it,
// fsynced, renamed) on every change; a file that cannot be read is an
// error at load, never an empty store.
//
// The store is bounded (a server chooses how many tools it lists, and how
// big they are): at most MaxTools tools a key; the administrator's
// servers at most MaxKeys keys and MaxBytes of definitions, and each
// user's own servers MaxUserKeys and MaxUserBytes of their own, so that
// no user can fill the share of the administrator or of another user.
// A tool seen past a bound is not pinned: Check says Full, and the
// caller holds the tool back (fail closed). A removed user's server's
// pins are dropped (Forget).
package pins

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/daemon/wire"
	"github.com/mcpcage/mcpcage/internal/linediff"
)

// Instructions is the name the server's instructions are pinned under,
// beside its tools: they go into the model's system prompt and say how
// to use the tools, so changing them changes what an agent does with
// tools whose definitions did not change. Their definition is the object
// {"instructions": ...}. Their pin is not counted toward MaxTools. A
// tool a server names so is checked against that pin (and so held
// back).
const Instructions = "(instructions)"

// Free are the members of a tool that are not part of its definition,
// but for the members of a "_meta" object that pinnedMeta names.
var Free = []string{"_meta", "icons"}

// MaxDefinition bounds a definition: a larger one cannot be pinned (a
// review must see all of it), and its tool is held back.
const MaxDefinition = 256 << 10

// Definition is a tool's definition in canonical form, and its digest.
type Definition struct {
	Digest string `json:"digest"`
	JSON   string `json:"definition"` // canonical, indented (for diffs)
}

// Canonical builds the Definition of a tool from its JSON object. A tool
// that parsers could read differently at any depth (members equal but
// for letter case, whose order then decides what a Go client reads; an
// unpaired surrogate escape, which Go turns into U+FFFD) is refused (see
// wire.Tree), and so is one whose UI resource hosts could read
// differently (see pinnedMetaOf): two such definitions could have one
// digest and two meanings.
func Canonical(tool []byte) (Definition, error) {
	if len(tool) > MaxDefinition {
		return Definition{}, fmt.Errorf("tool definition of %d bytes: at most %d can be pinned", len(tool), MaxDefinition)
	}
	if err := wire.Tree(tool, nil); err != nil {
		return Definition{}, fmt.Errorf("tool definition: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(tool))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return Definition{}, fmt.Errorf("tool definition: %w", err)
	}
	def := all
	meta, err := pinnedMetaOf(all["_meta"])
	if err != nil {
		return Definition{}, fmt.Errorf("tool definition: %w", err)
	}
	for _, f := range Free {
		delete(def, f)
	}
	if meta != nil {
		def["_meta"] = meta
	}
	compact, err := json.Marshal(def) // map keys sorted, at every depth
	if err != nil {
		return Definition{}, fmt.Errorf("tool definition: %w", err)
	}
	sum := sha256.Sum256(compact)
	pretty, _ := json.MarshalIndent(def, "", "  ") // the same value: cannot fail
	return Definition{Digest: "sha256:" + hex.EncodeToString(sum[:]), JSON: string(pretty)}, nil
}

// Pin is what is known of one tool of one server.
type Pin struct {
	Approved   Definition  `json:"approved"`
	ApprovedAt time.Time   `json:"approved_at"`
	ApprovedBy string      `json:"approved_by"` // "first use", or who approved a change
	Pending    *Definition `json:"pending,omitempty"`
	PendingAt  time.Time   `json:"pending_at,omitzero"`
}

// Quarantined says whether the tool's current definition awaits approval.
func (p Pin) Quarantined() bool { return p.Pending != nil }

// Verdict is what Check says of a tool's definition.
type Verdict int

// Verdicts.
const (
	Pinned    Verdict = iota // the approved definition
	PinnedNew                // first seen: pinned now
	Changed                  // differs from the pin: quarantined (newly, or still)
	Unpinned                 // new, and the policy quarantines new tools
	Full                     // new, and the store is full (see MaxTools): not pinned, to be held back
)

// Bounds of the store.
const (
	// MaxTools is the most tools pinned for one key: a server that lists
	// more has the rest held back.
	MaxTools = 1024
	// MaxKeys is the most keys of the administrator's servers.
	MaxKeys = 4096
	// MaxBytes bounds the definitions (approved and pending) and tool
	// names of the administrator's servers.
	MaxBytes = 64 << 20
	// MaxUserKeys and MaxUserBytes are the same bounds for the own
	// servers of one user, each user's apart: a user, who writes their
	// servers' lists, fills only their own share.
	MaxUserKeys  = 128
	MaxUserBytes = 16 << 20
)

// share is what the keys of one owner (the administrator, or one user)
// hold of the store.
type share struct {
	keys, bytes int
}

// ownerOf names the owner of a key: "" for the administrator's servers,
// "@UID" for a user's own (server names cannot hold '@').
func ownerOf(key string) string {
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		return key[i:]
	}
	return ""
}

// limits returns the bounds of owner's share: keys, bytes.
func limits(owner string) (int, int) {
	if owner == "" {
		return MaxKeys, MaxBytes
	}
	return MaxUserKeys, MaxUserBytes
}

// Store holds the pins of every server, by key (see Key).
type Store struct {
	path string
	// saveMu orders the writes of the file; mu guards the rest, and is
	// never held while the file is written.
	saveMu sync.Mutex
	mu     sync.Mutex
	pins   map[string]map[string]*Pin // key, tool
	shares map[string]*share          // by owner (see ownerOf)
	// version counts changes; saved is the version the file holds, and
	// keyVersion each key's latest change: a session saves only when its
	// own server's pins changed since the file was written, so it never
	// waits for another server's (see SaveFor).
	version, saved uint64
	keyVersion     map[string]uint64
	// unkeyed: a change no key's version tells of is not in the file (a
	// Forget, or any change of a write that failed): every SaveFor writes
	// until one succeeds.
	unkeyed bool
	// enc caches each pin's JSON (a changed pin's is dropped), so that a
	// save encodes under mu only what changed.
	enc map[string]map[string][]byte
}

// Key names a server's pins: the server, and for a user's own server its
// owner's uid.
func Key(server string, owner uint32, own bool) string {
	if own {
		return fmt.Sprintf("%s@%d", server, owner)
	}
	return server
}

// Open loads the store at path (absent: empty).
func Open(path string) (*Store, error) {
	s := &Store{path: path, pins: map[string]map[string]*Pin{}, enc: map[string]map[string][]byte{}, shares: map[string]*share{}, keyVersion: map[string]uint64{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tool pins: %w", err)
	}
	if err := json.Unmarshal(b, &s.pins); err != nil {
		return nil, fmt.Errorf("tool pins %s: %w: fix or remove the file (every tool is then pinned again on first use)", path, err)
	}
	for k, tools := range s.pins {
		sh := s.share(k)
		sh.keys++
		for t, p := range tools {
			sh.bytes += pinSize(t, p)
		}
	}
	return s, nil
}

// Check compares a tool's definition with its pin; what it changes is
// kept by the next Save. A pending change stays until it is approved,
// even when the server shows the approved definition again (the evidence
// stays for review). newQuarantined: a tool never seen is quarantined
// (Unpinned) instead of pinned (the caller decides it once per list, so
// that a server's first list is trusted on first use, whole).
func (s *Store) Check(key, tool string, def Definition, newQuarantined bool, now time.Time) (Verdict, Pin, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tools := s.pins[key]
	p, ok := tools[tool]
	switch {
	case ok && p.Approved.Digest == def.Digest:
		return Pinned, *p, nil
	case ok:
		if p.Pending != nil && p.Pending.Digest == def.Digest {
			return Changed, *p, nil
		}
		grow := len(def.JSON) + len(def.Digest)
		if p.Pending != nil {
			grow -= len(p.Pending.JSON) + len(p.Pending.Digest)
		}
		sh := s.share(key)
		if _, maxBytes := limits(ownerOf(key)); sh.bytes+grow > maxBytes {
			return Changed, *p, nil // quarantined all the same; the evidence is not kept
		}
		d := def
		sh.bytes += grow
		p.Pending, p.PendingAt = &d, now
		s.changed(key, tool)
		return Changed, *p, nil
	}
	if !s.room(key, tool, def) {
		return Full, Pin{}, nil
	}
	if tools == nil {
		tools = map[string]*Pin{}
		s.pins[key] = tools
		s.share(key).keys++
	}
	if newQuarantined {
		d := def
		p = &Pin{Pending: &d, PendingAt: now}
	} else {
		p = &Pin{Approved: def, ApprovedAt: now, ApprovedBy: "first use"}
	}
	tools[tool] = p
	s.share(key).bytes += pinSize(tool, p)
	s.changed(key, tool)
	if newQuarantined {
		return Unpinned, *p, nil
	}
	return PinnedNew, *p, nil
}

// share returns the share of key's owner (made when missing).
func (s *Store) share(key string) *share {
	o := ownerOf(key)
	sh := s.shares[o]
	if sh == nil {
		sh = &share{}
		s.shares[o] = sh
	}
	return sh
}

// room says whether a new tool of key fits its owner's share.
func (s *Store) room(key, tool string, def Definition) bool {
	tools, known := s.pins[key]
	sh := s.share(key)
	maxKeys, maxBytes := limits(ownerOf(key))
	switch {
	case !known && sh.keys >= maxKeys, tool != Instructions && toolCount(tools) >= MaxTools:
		return false
	}
	return sh.bytes+len(tool)+len(def.JSON)+len(def.Digest) <= maxBytes
}

// Full says whether key's pins are at MaxTools (or its owner's share at
// its keys or bytes): a tool of key that is not pinned cannot be.
func (s *Store) Full(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	tools, known := s.pins[key]
	sh := s.share(key)
	maxKeys, maxBytes := limits(ownerOf(key))
	return toolCount(tools) >= MaxTools || !known && sh.keys >= maxKeys || sh.bytes >= maxBytes
}

// Forget removes key's pins (a user's server that was removed), so that
// they no longer count toward its owner's share. A server added again
// under the name is pinned anew on first use.
func (s *Store) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tools, ok := s.pins[key]
	if !ok {
		return
	}
	sh := s.share(key)
	sh.keys--
	for t, p := range tools {
		sh.bytes -= pinSize(t, p)
	}
	delete(s.pins, key)
	delete(s.enc, key)
	delete(s.keyVersion, key)
	s.version++ // the next Save writes the file without them
	s.unkeyed = true
}

// pinSize is what a pin counts toward MaxBytes.
func pinSize(tool string, p *Pin) int {
	n := len(tool) + len(p.Approved.JSON) + len(p.Approved.Digest)
	if p.Pending != nil {
		n += len(p.Pending.JSON) + len(p.Pending.Digest)
	}
	return n
}

// changed notes that key's tool changed: the next Save writes it.
func (s *Store) changed(key, tool string) {
	delete(s.enc[key], tool)
	s.version++
	s.keyVersion[key] = s.version
}

// HasPins says whether key has pins of tools (a server's first list has
// none; the pin of its instructions, made as a session starts, does not
// count).
func (s *Store) HasPins(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return toolCount(s.pins[key]) > 0
}

// toolCount is how many of tools are tools' pins: the pin of the
// server's instructions is not one (nor counted toward MaxTools).
func toolCount(tools map[string]*Pin) int {
	if _, ok := tools[Instructions]; ok {
		return len(tools) - 1
	}
	return len(tools)
}

// Approved returns key's tool's pin, and whether it has an approved
// definition.
func (s *Store) Approved(key, tool string) (Pin, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pins[key][tool]
	if !ok || p.Approved.Digest == "" {
		return Pin{}, false
	}
	return *p, true
}

// Save writes what changed since the last Save (the checks of one list
// are saved together). Only the changed pins are encoded under the lock
// that Check and Get take; the file is written without it.
func (s *Store) Save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	return s.saveHeld()
}

// SaveFor is Save when key's pins changed since the file was last
// written, and nothing otherwise: a list that changed nothing of its own
// server's pins does not wait for a save of another server's (a user's
// server that changes its tools at every list would otherwise hold every
// other session's lists behind its writes). A save writes every change
// made until then, so one write serves the lists waiting for it.
func (s *Store) SaveFor(key string) error {
	if s.savedFor(key) {
		return nil
	}
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	if s.savedFor(key) { // written by the save this one waited for
		return nil
	}
	return s.saveHeld()
}

// savedFor says whether the file holds key's latest change and every
// change no key tells of.
func (s *Store) savedFor(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keyVersion[key] <= s.saved && !s.unkeyed
}

// saveHeld is Save with saveMu held by the caller. A failed write leaves
// saved as it was and marks the store unkeyed: the next save of any list
// tries again.
func (s *Store) saveHeld() error {
	s.mu.Lock()
	if s.saved == s.version {
		s.mu.Unlock()
		return nil
	}
	snap, err := s.snapshotLocked()
	v := s.version
	if err == nil {
		s.unkeyed = false // this write carries them; a Forget meanwhile sets it again
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	stallSave()
	if err := s.write(snap); err != nil {
		s.mu.Lock()
		s.unkeyed = true // the changes of every key since saved: any list retries
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.saved = v
	s.mu.Unlock()
	return nil
}

// Get returns key's tool's pin.
func (s *Store) Get(key, tool string) (Pin, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pins[key][tool]
	if !ok {
		return Pin{}, false
	}
	return *p, true
}

// Approve makes the pending definition of key's tool the pin, if it is
// the one reviewed: digest (or at least its first 12 hex digits) must be
// the pending definition's, so that a server that changed the tool again
// after the review gets nothing approved.
func (s *Store) Approve(key, tool, digest, by string, now time.Time) (Pin, error) {
	// saveMu is held throughout, so that no other save can write the
	// approval between a failed save and its undo.
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pins[key][tool]
	if !ok {
		return Pin{}, fmt.Errorf("no tool %q is pinned for %s: see `mcpcage pins`", tool, key)
	}
	if p.Pending == nil {
		return Pin{}, fmt.Errorf("tool %q of %s has no change waiting for approval", tool, key)
	}
	hexPart := strings.TrimPrefix(digest, "sha256:")
	if len(hexPart) < 12 || !strings.HasPrefix(strings.TrimPrefix(p.Pending.Digest, "sha256:"), hexPart) {
		return Pin{}, fmt.Errorf("the waiting definition of tool %q is %s, not %q: it changed since the review, or the digest is short (12 hex digits at least): run `mcpcage pins diff` again", tool, p.Pending.Digest, digest)
	}
	old := *p
	p.Approved, p.ApprovedAt, p.ApprovedBy, p.Pending = *p.Pending, now, by, nil
	s.share(key).bytes -= len(old.Approved.JSON) + len(old.Approved.Digest) // the pending one is the approved one now
	s.changed(key, tool)
	approved := *p
	s.mu.Unlock()
	err := s.saveHeld()
	s.mu.Lock()
	if err != nil {
		if s.pins[key][tool] == p && p.Approved.Digest == approved.Approved.Digest && p.Pending == nil {
			*p = old // nothing changed it since: undo
			s.share(key).bytes += len(old.Approved.JSON) + len(old.Approved.Digest)
			s.changed(key, tool)
		}
		return Pin{}, err
	}
	return approved, nil
}

// Entry is one pin, with its server key and tool, for listings.
type Entry struct {
	Key  string `json:"key"`
	Tool string `json:"tool"`
	Pin
}

// List returns the pins whose key is one of keys (all when keys is nil),
// sorted.
func (s *Store) List(keys map[string]bool) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for k, tools := range s.pins {
		if keys != nil && !keys[k] {
			continue
		}
		for t, p := range tools {
			out = append(out, Entry{Key: k, Tool: t, Pin: *p})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Key != out[j].Key {
			return out[i].Key < out[j].Key
		}
		return out[i].Tool < out[j].Tool
	})
	return out
}

// Diff is a line diff of two definitions ("-" approved, "+" pending),
// bounded to max bytes.
func Diff(old, new string, max int) string { return linediff.Lines(old, new, max) }
