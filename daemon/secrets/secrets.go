// Package secrets is mcpcaged's store of values injected into servers'
// environments (env = { TOKEN = "secret:NAME" }): one root-only file per
// secret in a root-only directory under the state dir. Values are never
// logged and never returned by the API.
package secrets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/mcpcage/mcpcage/config"
)

// Store is a directory of secrets.
type Store struct{ dir string }

// ErrNotFound is returned for a secret that is not set.
var ErrNotFound = errors.New("secret not set")

// Open creates the directory (mode 0700) when needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	return &Store{dir: dir}, nil
}

func (s *Store) path(name string) (string, error) {
	if !config.ValidSecretName(name) {
		return "", fmt.Errorf("invalid secret name %q: use letters, digits, '.', '-' and '_'", name)
	}
	return filepath.Join(s.dir, name), nil
}

// Set stores value under name, atomically, mode 0600.
func (s *Store) Set(name, value string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-")
	if err != nil {
		return fmt.Errorf("write secret: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename
	if err := tmp.Chmod(0o600); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write secret: %w", err)
	}
	if _, err := tmp.WriteString(value); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write secret: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write secret: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write secret: %w", err)
	}
	return os.Rename(tmp.Name(), p)
}

// Get returns the value of name.
func (s *Store) Get(name string) (string, error) {
	p, err := s.path(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: %q: set it with `mcpcage secret set %s` (value on stdin)", ErrNotFound, name, name)
	}
	if err != nil {
		return "", fmt.Errorf("read secret %q: %w", name, err)
	}
	return string(b), nil
}

// Remove deletes name.
func (s *Store) Remove(name string) error {
	p, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(p); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	} else if err != nil {
		return err
	}
	return nil
}

// Names lists the secrets that are set.
func (s *Store) Names() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if config.ValidSecretName(e.Name()) {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}
