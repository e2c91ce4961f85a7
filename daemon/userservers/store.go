package userservers

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/mcpcage/mcpcage/config"
)

// Limits of what one user may store: every add reads and rewrites the
// user's whole file, and the daemon reads it at each of the user's session
// starts, so the file stays small.
const (
	MaxServersPerUser = 64       // servers one user may store
	MaxServerBytes    = 64 << 10 // one definition, encoded as JSON
	// MaxMounts bounds one definition's mounts: the daemon searches each
	// mount for deny_paths names with budgets of its own (sandbox
	// DenyScanEntries) at every launch and spec preview, so the mounts
	// are what one session start or preview may cost it.
	MaxMounts = 32
)

// Store is the directory of per-user definitions. Each user's file has a
// lock of its own: one user's slow add never delays another user's lookup.
type Store struct {
	dir string

	mu    sync.Mutex // guards users
	users map[uint32]*userLock
}

// userLock serializes one user's reads and writes; refs counts its holders
// and waiters, so the entry goes once nobody uses it.
type userLock struct {
	mu   sync.Mutex
	refs int
}

// ErrNotFound is returned for an unknown server.
var ErrNotFound = errors.New("no such server")

// ErrLimit is returned for an add past [MaxServersPerUser] or
// [MaxServerBytes].
var ErrLimit = errors.New("over the limit of servers of your own")

// Open creates the directory (0700) when needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("user servers: %w", err)
	}
	return &Store{dir: dir, users: map[uint32]*userLock{}}, nil
}

// lock takes uid's lock; the returned function releases it.
func (s *Store) lock(uid uint32) (unlock func()) {
	s.mu.Lock()
	l := s.users[uid]
	if l == nil {
		l = &userLock{}
		s.users[uid] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.users, uid)
		}
		s.mu.Unlock()
	}
}

func (s *Store) path(uid uint32) string {
	return filepath.Join(s.dir, strconv.FormatUint(uint64(uid), 10)+".json")
}

// load reads uid's definitions, in any format version.
func (s *Store) load(uid uint32) (map[string]Server, error) {
	b, err := os.ReadFile(s.path(uid))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Server{}, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := decode(b)
	if err != nil {
		return nil, fmt.Errorf("user servers of uid %d: %w", uid, err)
	}
	return m, nil
}

func (s *Store) save(uid uint32, m map[string]Server) error {
	b, err := encode(m)
	if err != nil {
		return err
	}
	tmp := s.path(uid) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(uid))
}

// Get returns uid's server name, validated again: one that no longer
// passes (the rules tightened since it was stored) stays stored, so that
// it can be removed, but it never runs.
func (s *Store) Get(uid uint32, name string) (*config.Server, error) {
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return nil, err
	}
	stored, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	srv, err := stored.Config(name)
	if err != nil {
		return nil, fmt.Errorf("user server %q no longer passes validation (remove it and add it again): %w", name, err)
	}
	srv.Definition = Digest(stored)
	return srv, nil
}

// Stored returns uid's server name as stored, whether or not it still
// validates ([ErrNotFound] when there is none).
func (s *Store) Stored(uid uint32, name string) (Server, error) {
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return Server{}, err
	}
	stored, ok := m[name]
	if !ok {
		return Server{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return stored, nil
}

// Digest identifies definition s as stored: equal for two definitions
// exactly when [Same] is true.
func Digest(s Server) string {
	b, err := json.Marshal(s)
	if err != nil { // not for these types; fmt sorts maps too
		b = fmt.Appendf(nil, "%#v", s)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Same reports whether a and b are one definition (as stored: an empty
// list and none are the same).
func Same(a, b Server) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && bytes.Equal(ja, jb)
}

// Put stores (or replaces) server name and returns the definition it
// replaced, nil when name is new: [Store.Undo] puts that one back. It
// refuses a definition that does not validate ([Server.Config]), one
// larger than [MaxServerBytes] and a new name past [MaxServersPerUser]
// ([ErrLimit]).
func (s *Store) Put(uid uint32, name string, srv Server) (replaced *Server, err error) {
	if _, err := srv.Config(name); err != nil {
		return nil, err
	}
	b, err := json.Marshal(srv)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxServerBytes {
		return nil, fmt.Errorf("%w: server %q is %d bytes as stored, and one server may take at most %d (%d KiB): shorten its command, arguments or environment (put large values in a file and mount it)",
			ErrLimit, name, len(b), MaxServerBytes, MaxServerBytes>>10)
	}
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return nil, err
	}
	old, replace := m[name]
	if !replace && len(m) >= MaxServersPerUser {
		return nil, fmt.Errorf("%w: you have %d servers of your own, the most one user may store is %d: remove one (mcpcage server rm NAME) before adding %q",
			ErrLimit, len(m), MaxServersPerUser, name)
	}
	m[name] = srv
	if err := s.save(uid, m); err != nil {
		return nil, err
	}
	if replace {
		return &old, nil
	}
	return nil, nil
}

// Undo takes back a [Store.Put] of srv as name that replaced prev (nil:
// name was new): prev is stored again as it was, not validated again (a
// definition the rules refuse today stays stored, as [Store.Get] says),
// or name is removed. A change stored since (another Put of name, or its
// removal) is newer than the one undone: it is left as it is.
func (s *Store) Undo(uid uint32, name string, srv Server, prev *Server) error {
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return err
	}
	if cur, ok := m[name]; !ok || !same(cur, srv) {
		return nil
	}
	if prev == nil {
		delete(m, name)
	} else {
		m[name] = *prev
	}
	return s.save(uid, m)
}

// same reports whether a and b are stored alike (compared as encoded:
// nil and empty lists are the same once omitted).
func same(a, b Server) bool {
	x, errX := json.Marshal(a)
	y, errY := json.Marshal(b)
	return errX == nil && errY == nil && bytes.Equal(x, y)
}

// Remove deletes a definition.
func (s *Store) Remove(uid uint32, name string) error {
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return err
	}
	if _, ok := m[name]; !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	delete(m, name)
	return s.save(uid, m)
}

// List returns uid's servers that can run, sorted by name.
func (s *Store) List(uid uint32) ([]*config.Server, error) {
	defer s.lock(uid)()
	m, err := s.load(uid)
	if err != nil {
		return nil, err
	}
	out := make([]*config.Server, 0, len(m))
	for name, stored := range m {
		if srv, err := stored.Config(name); err == nil {
			out = append(out, srv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Images returns the images every user's servers name, each once. A file
// that cannot be read is an error: the caller must not take its servers'
// images for unused.
func (s *Store) Images() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("user servers: %w", err)
	}
	seen := map[string]bool{}
	var out []string
	for _, e := range ents {
		uid, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".json"), 10, 32)
		if err != nil || !strings.HasSuffix(e.Name(), ".json") {
			continue // not a user's file (a temporary one of save)
		}
		unlock := s.lock(uint32(uid))
		m, err := s.load(uint32(uid))
		unlock()
		if err != nil {
			return nil, err
		}
		for _, srv := range m {
			if srv.Image != "" && !seen[srv.Image] {
				seen[srv.Image] = true
				out = append(out, srv.Image)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
