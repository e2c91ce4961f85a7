package consent

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // pure-Go SQLite: no cgo in a security daemon

	"github.com/mcpcage/mcpcage/api"
)

// migrations are applied in order; each runs once, recorded in
// schema_migrations. Never edit one that shipped: append.
var migrations = []string{
	`CREATE TABLE consents (
		id            TEXT PRIMARY KEY,
		user          TEXT NOT NULL,
		agent         TEXT NOT NULL,
		server        TEXT NOT NULL,
		tools         TEXT NOT NULL DEFAULT '[]',
		resources     TEXT NOT NULL DEFAULT '[]',
		prompts       TEXT NOT NULL DEFAULT '[]',
		condition     TEXT NOT NULL DEFAULT '',
		expires_at    INTEGER,
		max_calls     INTEGER,
		calls_used    INTEGER NOT NULL DEFAULT 0,
		created_at    INTEGER NOT NULL,
		created_by    TEXT NOT NULL,
		granted_via   TEXT NOT NULL,
		revoked_at    INTEGER,
		revoked_by    TEXT NOT NULL DEFAULT '',
		revoke_reason TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX consents_lookup ON consents(user, agent, server);`,
	// Answers to consent questions: a record for one session, a record
	// bound to the tool definition the user was shown.
	`ALTER TABLE consents ADD COLUMN session TEXT NOT NULL DEFAULT '';
	ALTER TABLE consents ADD COLUMN pin TEXT NOT NULL DEFAULT '';
	ALTER TABLE consents ADD COLUMN request TEXT NOT NULL DEFAULT '';`,
	// The server definition a record was given for (Record.Definition);
	// records made before carry Unbound until BindUnbound binds them.
	`ALTER TABLE consents ADD COLUMN definition TEXT NOT NULL DEFAULT '` + Unbound + `';`,
	// 5: the uid the record's user had when it was given; records made
	// before carry -1 (api.UIDUnbound) until BindUIDs binds them.
	`ALTER TABLE consents ADD COLUMN uid INTEGER NOT NULL DEFAULT -1;`,
}

// Unbound is the Definition of a record made before records were bound
// to a server definition: it covers nothing until [Store.BindUnbound]
// binds it.
const Unbound = "?unbound"

// Store is the consent database.
type Store struct {
	db *sql.DB

	// Calls allowed by records without a budget are counted in memory
	// and stored within countDelay (and before any read and on Close), so
	// counting costs an allowed call no disk write of its own.
	countMu   sync.Mutex
	uncounted map[string]int64
	flushing  bool
}

// countDelay bounds how long a counted call stays in memory only.
const countDelay = time.Second

// ErrNotFound is returned for an unknown record id.
var ErrNotFound = errors.New("no such consent record")

// Open opens (creating and migrating) the database at path.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("consent store: %w", err)
	}
	if err := private(path); err != nil {
		return nil, fmt.Errorf("consent store: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)")
	if err != nil {
		return nil, fmt.Errorf("open consent store: %w", err)
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serialises anyway
	s := &Store{db: db}
	if err := s.migrate(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// private makes the database file exist with mode 0600 before SQLite opens
// it: SQLite creates the -wal and -shm files with the database file's
// mode, so they are private from their first byte. Files left by an older
// mcpcaged with a wider mode are narrowed.
func private(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_ = f.Close() // only created: nothing was written
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Close stores the calls still counted in memory and closes the database.
func (s *Store) Close() error {
	ferr := s.flushCalls()
	if err := s.db.Close(); err != nil {
		return err
	}
	return ferr
}

// Count records one call allowed by record id, which has no budget (a
// budget is taken with Consume).
func (s *Store) Count(id string) {
	s.countMu.Lock()
	defer s.countMu.Unlock()
	if s.uncounted == nil {
		s.uncounted = map[string]int64{}
	}
	s.uncounted[id]++
	if !s.flushing {
		s.flushing = true
		time.AfterFunc(countDelay, func() { _ = s.flushCalls() })
	}
}

// flushCalls adds the calls counted in memory to calls_used.
func (s *Store) flushCalls() error {
	s.countMu.Lock()
	n := s.uncounted
	s.uncounted, s.flushing = nil, false
	s.countMu.Unlock()
	if len(n) == 0 {
		return nil
	}
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("count consent calls: %w", err)
	}
	for id, k := range n {
		if _, err := tx.Exec(`UPDATE consents SET calls_used = calls_used + ? WHERE id = ?`, k, id); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("count consent calls: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("count consent calls: %w", err)
	}
	return nil
}

func (s *Store) migrate() error {
	if _, err := s.db.Exec(`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("consent store migrations: %w", err)
	}
	var have int
	if err := s.db.QueryRow(`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("consent store migrations: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("consent store is at schema version %d, newer than this mcpcaged (%d): upgrade mcpcaged", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(migrations[v-1]); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("consent store migration %d: %w", v, err)
		}
		if _, err := tx.Exec(`INSERT INTO schema_migrations(version, applied_at) VALUES(?, ?)`, v, time.Now().Unix()); err != nil {
			_ = tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion returns the applied migration count.
func (s *Store) SchemaVersion() (int, error) {
	var v int
	err := s.db.QueryRow(`SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return "c-" + hex.EncodeToString(b[:])
}

// Add stores a new record (its ID and CreatedAt are set here).
func (s *Store) Add(r *Record) error {
	r.ID = newID()
	r.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	tools, _ := json.Marshal(nonNil(r.Tools))
	res, _ := json.Marshal(nonNil(r.Resources))
	prompts, _ := json.Marshal(nonNil(r.Prompts))
	_, err := s.db.Exec(`INSERT INTO consents(id, user, agent, server, tools, resources, prompts, condition, expires_at, max_calls,
		created_at, created_by, granted_via, session, pin, request, definition, uid) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		r.ID, r.User, r.Agent, r.Server, string(tools), string(res), string(prompts), r.When, unixMilli(r.ExpiresAt), r.MaxCalls,
		r.CreatedAt.UnixMilli(), r.CreatedBy, r.Via, r.Session, r.Pin, r.Request, r.Definition, r.UID)
	if err != nil {
		return fmt.Errorf("store consent: %w", err)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func unixMilli(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMilli()
}

// Revoke marks a record revoked; revoking twice is an error.
func (s *Store) Revoke(id, by, reason string) (*Record, error) {
	res, err := s.db.Exec(`UPDATE consents SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL`,
		time.Now().UnixMilli(), by, reason, id)
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		r, err := s.Get(id)
		if err != nil {
			return nil, err
		}
		return r, fmt.Errorf("consent %s: %w", id, errAlreadyRevoked)
	}
	return s.Get(id)
}

// PruneInactive deletes the oldest inactive records of user (revoked,
// expired, used up) past the newest keep of them, and returns how many it
// deleted. Their grants and revocations stay in the audit log; without a
// bound, a user granting and revoking in a loop grew root's disk without
// end (found by a red-team helper).
func (s *Store) PruneInactive(user string, keep int) (int, error) {
	if err := s.flushCalls(); err != nil {
		return 0, err
	}
	res, err := s.db.Exec(`DELETE FROM consents WHERE id IN (SELECT id FROM consents WHERE user = ? AND (revoked_at IS NOT NULL
		OR (expires_at IS NOT NULL AND expires_at <= ?) OR (max_calls IS NOT NULL AND calls_used >= max_calls))
		ORDER BY created_at DESC, id LIMIT -1 OFFSET ?)`, user, time.Now().UnixMilli(), keep)
	if err != nil {
		return 0, fmt.Errorf("prune inactive consents: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// RevokeSessionBound revokes every active record made for one session
// (they can allow nothing once their session is gone: at start-up, none
// is left) and returns them.
func (s *Store) RevokeSessionBound(by, reason string) ([]*Record, error) {
	return s.revokeWhere(`session != ''`, nil, by, reason)
}

// errAlreadyRevoked: Revoke found the record revoked already.
var errAlreadyRevoked = errors.New("it is already revoked")

// RevokeServer revokes every record of user for server, whatever its
// agent, and returns them: a user's own server that its user removed or
// defined anew is no longer the server they were given for.
func (s *Store) RevokeServer(user, server, by, reason string) ([]*Record, error) {
	return s.revokeWhere(`user = ? AND server = ?`, []any{user, server}, by, reason)
}

// revokeWhere revokes the records not yet revoked that match the SQL
// condition cond (with args) and returns them.
func (s *Store) revokeWhere(cond string, args []any, by, reason string) ([]*Record, error) {
	ids, err := s.strings(`SELECT id FROM consents WHERE revoked_at IS NULL AND `+cond, args...)
	if err != nil {
		return nil, fmt.Errorf("find consents to revoke: %w", err)
	}
	var out []*Record
	for _, id := range ids {
		r, err := s.Revoke(id, by, reason)
		switch {
		case errors.Is(err, errAlreadyRevoked):
			continue // revoked meanwhile
		case err != nil:
			return out, err // the caller fails closed
		}
		out = append(out, r)
	}
	return out, nil
}

// Consume takes one call from the record's budget; false when none is
// left (or the record is inactive). Safe under concurrency: the check and
// the decrement are one statement.
func (s *Store) Consume(id string, now time.Time) (bool, error) {
	res, err := s.db.Exec(`UPDATE consents SET calls_used = calls_used + 1
		WHERE id = ? AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)
		AND (max_calls IS NULL OR calls_used < max_calls)`, id, now.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("consume consent budget: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

const columns = `id, user, agent, server, tools, resources, prompts, condition, expires_at, max_calls, calls_used,
	created_at, created_by, granted_via, revoked_at, revoked_by, revoke_reason, session, pin, request, definition, uid`

func scan(row interface{ Scan(...any) error }) (*Record, error) {
	var r Record
	var tools, res, prompts string
	var expires, maxCalls, revoked sql.NullInt64
	var created int64
	if err := row.Scan(&r.ID, &r.User, &r.Agent, &r.Server, &tools, &res, &prompts, &r.When, &expires, &maxCalls, &r.CallsUsed,
		&created, &r.CreatedBy, &r.Via, &revoked, &r.RevokedBy, &r.Reason, &r.Session, &r.Pin, &r.Request, &r.Definition, &r.UID); err != nil {
		return nil, err
	}
	// A record whose patterns cannot be read is an error, not a grant of
	// nothing (or of part of what was stored).
	for _, c := range []struct {
		col, raw string
		dst      *[]string
	}{{"tools", tools, &r.Tools}, {"resources", res, &r.Resources}, {"prompts", prompts, &r.Prompts}} {
		if err := json.Unmarshal([]byte(c.raw), c.dst); err != nil {
			return nil, fmt.Errorf("consent record %s: %s: %w", r.ID, c.col, err)
		}
	}
	r.CreatedAt = time.UnixMilli(created).UTC()
	if expires.Valid {
		t := time.UnixMilli(expires.Int64).UTC()
		r.ExpiresAt = &t
	}
	if maxCalls.Valid {
		n := maxCalls.Int64
		r.MaxCalls = &n
	}
	if revoked.Valid {
		t := time.UnixMilli(revoked.Int64).UTC()
		r.RevokedAt = &t
	}
	return &r, nil
}

// Get returns one record.
func (s *Store) Get(id string) (*Record, error) {
	if err := s.flushCalls(); err != nil {
		return nil, err
	}
	r, err := scan(s.db.QueryRow(`SELECT `+columns+` FROM consents WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return r, err
}

// Filter selects records for List; empty fields match everything.
type Filter struct {
	User, Agent, Server string
	IncludeInactive     bool // revoked, expired, used up
	// SkipSpent leaves out, even with IncludeInactive, the inactive
	// records made for one request or one session: answers to consent
	// questions pile up, and once spent they explain nothing.
	SkipSpent bool
}

// CountActive counts the records that can allow something now, of one
// account (user and the uid it has) or (user "") of everyone, without
// reading them: the consent gauge and the per-user bound ask on every
// change, and a user may hold thousands of records. Records of an
// earlier account of the name (another uid, or one gone when they were
// bound) cover nothing, and so count toward nothing.
func (s *Store) CountActive(ctx context.Context, user string, uid int64) (int, error) {
	q := `SELECT COUNT(*) FROM consents WHERE revoked_at IS NULL
		AND (expires_at IS NULL OR expires_at > ?) AND (max_calls IS NULL OR calls_used < max_calls)`
	args := []any{time.Now().UnixMilli()}
	if user != "" {
		q += " AND user = ? AND uid = ?"
		args = append(args, user, uid)
	} else {
		q += " AND uid >= 0"
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count consents: %w", err)
	}
	return n, nil
}

// List returns matching records, newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]*Record, error) {
	if err := s.flushCalls(); err != nil {
		return nil, err
	}
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{{"user", f.User}, {"agent", f.Agent}, {"server", f.Server}} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if f.SkipSpent {
		where = append(where, `NOT ((request != '' OR session != '') AND (revoked_at IS NOT NULL
			OR (expires_at IS NOT NULL AND expires_at <= ?) OR (max_calls IS NOT NULL AND calls_used >= max_calls)))`)
		args = append(args, time.Now().UnixMilli())
	}
	q := `SELECT ` + columns + ` FROM consents`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list consents: %w", err)
	}
	defer func() { _ = rows.Close() }()
	now := time.Now()
	var out []*Record
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			return nil, err
		}
		if f.IncludeInactive || r.Active(now) {
			out = append(out, r)
		}
	}
	return out, rows.Err()
}

// BindUIDs binds every record made before records were bound to a uid
// (UID api.UIDUnbound) to the uid its user has now, as uidOf reports it
// (known false: no such user, bound to api.UIDGone, covering nothing, so
// an account made later under the name inherits none of them), and
// returns how many records it bound per user. A user whose uid cannot be
// read keeps its records unbound (they cover nothing) and the error says
// which.
func (s *Store) BindUIDs(uidOf func(user string) (uid uint32, known bool, err error)) (map[string]int, error) {
	users, err := s.strings(`SELECT DISTINCT user FROM consents WHERE uid = ?`, api.UIDUnbound)
	if err != nil {
		return nil, fmt.Errorf("consent records to bind to a uid: %w", err)
	}
	bound := map[string]int{}
	var errs []error
	for _, u := range users {
		uid, known, err := uidOf(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("the consents of %s stay unbound and cover nothing: %w", u, err))
			continue
		}
		to := api.UIDGone
		if known {
			to = int64(uid)
		}
		res, err := s.db.Exec(`UPDATE consents SET uid = ? WHERE user = ? AND uid = ?`, to, u, api.UIDUnbound)
		if err != nil {
			errs = append(errs, fmt.Errorf("the consents of %s stay unbound and cover nothing: %w", u, err))
			continue
		}
		n, _ := res.RowsAffected()
		bound[u] = int(n)
	}
	return bound, errors.Join(errs...)
}

// strings runs a query of one text column and returns its values.
func (s *Store) strings(query string, args ...any) ([]string, error) {
	rows, err := s.db.Query(query, args...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Bound is one (user, server) whose records BindUnbound bound.
type Bound struct {
	User, Server, Definition string
	Records                  int
}

// BindUnbound binds every record made before records were bound to a
// server definition (Definition [Unbound]) to the definition its server
// has now, as definitionOf reports it for the record's user and server,
// and returns what it bound. Such a record covered any program of the
// name; now it covers the one it would have covered at this moment. The
// records of a pair whose definition cannot be read stay unbound (they
// cover nothing) and the error says which; the others are bound.
func (s *Store) BindUnbound(definitionOf func(user, server string) (string, error)) ([]Bound, error) {
	rows, err := s.db.Query(`SELECT DISTINCT user, server FROM consents WHERE definition = ?`, Unbound)
	if err != nil {
		return nil, fmt.Errorf("consent records to bind: %w", err)
	}
	var pairs []Bound
	for rows.Next() {
		var p Bound
		if err := rows.Scan(&p.User, &p.Server); err != nil {
			_ = rows.Close()
			return nil, fmt.Errorf("consent records to bind: %w", err)
		}
		pairs = append(pairs, p)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	var bound []Bound
	var errs []error
	for _, p := range pairs {
		def, err := definitionOf(p.User, p.Server)
		if err == nil {
			var res sql.Result
			if res, err = s.db.Exec(`UPDATE consents SET definition = ? WHERE user = ? AND server = ? AND definition = ?`, def, p.User, p.Server, Unbound); err == nil {
				k, _ := res.RowsAffected()
				p.Definition, p.Records = def, int(k)
				bound = append(bound, p)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("the consents of %s for server %s stay unbound and cover nothing: %w", p.User, p.Server, err))
	}
	return bound, errors.Join(errs...)
}
