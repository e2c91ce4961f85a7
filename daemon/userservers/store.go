package userservers

import (
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

// Store is the directory of per-user definitions.
type Store struct {
	dir string
	mu  sync.Mutex
}

// ErrNotFound is returned for an unknown server.
var ErrNotFound = errors.New("no such server")

// Open creates the directory (0700) when needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("user servers: %w", err)
	}
	return &Store{dir: dir}, nil
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	return srv, nil
}

// Put stores (or replaces) server name. It refuses a definition that does
// not validate ([Server.Config]).
func (s *Store) Put(uid uint32, name string, srv Server) error {
	if _, err := srv.Config(name); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.load(uid)
	if err != nil {
		return err
	}
	m[name] = srv
	return s.save(uid, m)
}

// Remove deletes a definition.
func (s *Store) Remove(uid uint32, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
		m, err := s.load(uint32(uid))
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
