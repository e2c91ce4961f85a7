// Package userservers keeps server definitions that users add for
// themselves (mcpcage server add, mcpcage client setup): one JSON file per
// uid in a root-only directory. A user's servers are visible to and usable
// by that user only; they always run as that user, on mcpcage's default
// sandbox rules.
package userservers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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

func (s *Store) load(uid uint32) (map[string]*config.Server, error) {
	b, err := os.ReadFile(s.path(uid))
	if errors.Is(err, os.ErrNotExist) {
		return map[string]*config.Server{}, nil
	}
	if err != nil {
		return nil, err
	}
	m := map[string]*config.Server{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("user servers of uid %d: %w", uid, err)
	}
	for name, srv := range m {
		srv.Validate(name) // fills defaults; stored definitions were valid
	}
	return m, nil
}

func (s *Store) save(uid uint32, m map[string]*config.Server) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path(uid) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(uid))
}

// Get returns uid's server name.
func (s *Store) Get(uid uint32, name string) (*config.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.load(uid)
	if err != nil {
		return nil, err
	}
	srv, ok := m[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return srv, nil
}

// Put stores (or replaces) a definition.
func (s *Store) Put(uid uint32, srv *config.Server) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.load(uid)
	if err != nil {
		return err
	}
	m[srv.Name] = srv
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

// List returns uid's servers sorted by name.
func (s *Store) List(uid uint32) ([]*config.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.load(uid)
	if err != nil {
		return nil, err
	}
	out := make([]*config.Server, 0, len(m))
	for _, srv := range m {
		out = append(out, srv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
