package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/secrets"
	"github.com/mcpcage/mcpcage/sandbox"
)

// User secrets: every user has a store of their own
// (state_dir/user-secrets/UID), which they manage with `mcpcage secret`
// without sudo and which only their own servers read. A user's server
// resolves "secret:NAME" from its owner's store and from nowhere else: the
// administrator's secrets are for the administrator's servers, or any
// local user could add a server whose env names one and print it. Root's
// own servers may also read the administrator's store, which root owns.

// userSecretsRoot holds one directory per uid.
func (d *Daemon) userSecretsRoot() string {
	return filepath.Join(d.conf().Daemon.StateDir, "user-secrets")
}

// userSecrets opens uid's store; nil when the user has none and create
// is false.
func (d *Daemon) userSecrets(uid uint32, create bool) (*secrets.Store, error) {
	dir := filepath.Join(d.userSecretsRoot(), strconv.FormatUint(uint64(uid), 10))
	if !create {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	if err := os.MkdirAll(d.userSecretsRoot(), 0o700); err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	return secrets.Open(dir)
}

// userSecretMu serialises changes to users' stores, so the bounds below
// hold under concurrent requests.
var userSecretMu sync.Mutex

// Bounds of one user's store, which lives on root's disk, and of all
// users' stores together: 256 MiB is 16 users at their bound (16 MiB),
// or thousands of users with the tokens secrets usually are.
const (
	userSecretsMax      = 256
	userSecretMaxBytes  = 64 << 10
	userSecretsMaxTotal = 256 << 20
)

// userSecretsBytes is the size of all users' own secrets together
// (userSecretMu held): counted from the disk once, then kept by the
// changes the daemon makes. A value that would take it past
// userSecretsMaxTotal has it counted again first, so that stores changed
// behind the daemon's back (an administrator's rm) refuse nothing wrongly.
type userSecretsBytes struct {
	counted bool
	n       int64
}

// count counts the values in root's stores.
func (b *userSecretsBytes) count(root string) error {
	dirs, err := os.ReadDir(root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("count users' secrets: %w", err)
	}
	var n int64
	for _, d := range dirs {
		files, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			continue // not a store
		}
		for _, f := range files {
			if fi, err := f.Info(); err == nil && fi.Mode().IsRegular() {
				n += fi.Size()
			}
		}
	}
	b.counted, b.n = true, n
	return nil
}

// room refuses a value of size bytes replacing one of old bytes when all
// users' secrets would then pass userSecretsMaxTotal.
func (b *userSecretsBytes) room(root string, old, size int) error {
	if !b.counted || b.n-int64(old)+int64(size) > userSecretsMaxTotal {
		if err := b.count(root); err != nil {
			return err
		}
	}
	if b.n-int64(old)+int64(size) > userSecretsMaxTotal {
		return fmt.Errorf("the secrets users keep in mcpcaged hold %d bytes together, and this value (%d bytes) would take them past %d MiB, the most mcpcaged keeps on its disk: remove secrets you no longer need (mcpcage secret rm NAME), or ask the administrator", b.n, size, userSecretsMaxTotal>>20)
	}
	return nil
}

// changed counts a value of size bytes that replaced one of old bytes.
func (b *userSecretsBytes) changed(old, size int) {
	if b.counted {
		b.n += int64(size - old)
	}
}

// sizeOf is the size of st's secret name, 0 when it is not set.
func sizeOf(st *secrets.Store, name string) int {
	v, err := st.Get(name)
	if err != nil {
		return 0
	}
	return len(v)
}

// userSecretRoom refuses a value that would take a user's store past its
// bounds.
func userSecretRoom(st *secrets.Store, name, value string) error {
	if len(value) > userSecretMaxBytes {
		return fmt.Errorf("the value is %d bytes; a secret of your own holds at most %d", len(value), userSecretMaxBytes)
	}
	names, err := st.Names()
	if err != nil {
		return err
	}
	if len(names) >= userSecretsMax && !slices.Contains(names, name) {
		return fmt.Errorf("you have %d secrets, the most one user may keep: remove some (mcpcage secret rm NAME)", len(names))
	}
	return nil
}

// userSecretFor resolves secret name for a server of uid's own.
func (d *Daemon) userSecretFor(uid uint32, name string) (string, error) {
	st, err := d.userSecrets(uid, false)
	if err != nil {
		return "", err
	}
	if st != nil {
		v, err := st.Get(name)
		if !errors.Is(err, secrets.ErrNotFound) {
			return v, err
		}
	}
	if uid == 0 {
		return d.secrets.Get(name)
	}
	return "", fmt.Errorf("secret %s is not among your own secrets (your servers never read the administrator's): store it with `mcpcage secret set %s` (the value on stdin)", name, name)
}

// dirValues are the values of the store in dir.
func dirValues(dir string) []string {
	st, err := secrets.Open(dir)
	if err != nil {
		return nil
	}
	return storeValues(st)
}

// storeValues are the values of st long enough to scrub (4 bytes or
// more).
func storeValues(st *secrets.Store) []string {
	names, _ := st.Names()
	var out []string
	for _, n := range names {
		if v, err := st.Get(n); err == nil && len(v) >= 4 {
			out = append(out, v)
		}
	}
	return out
}

// injectedSecrets are the values params' env received from a secret
// store (those long enough to scrub).
func injectedSecrets(srv *config.Server, params sandbox.Params) []string {
	var out []string
	for k, v := range srv.Env {
		if strings.HasPrefix(v, config.SecretPrefix) && len(params.Env[k]) >= 4 {
			out = append(out, params.Env[k])
		}
	}
	return out
}

// flushWarmFor discards the prepared sandboxes a change of peer's secrets
// makes stale: everyone's for root (the administrator's and agents'
// stores), the user's own otherwise. (A stale one would also be caught
// when taken: the fingerprint holds the resolved values.)
func (d *Daemon) flushWarmFor(peer Peer) {
	if peer.UID == 0 {
		d.warm.flush()
		return
	}
	d.warm.flushUser(peer.UID)
}
