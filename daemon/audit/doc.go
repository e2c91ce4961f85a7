// Package audit is mcpcage's tamper-evident audit log: append-only JSON
// Lines, one record per event, chained by hashes.
//
// Every record carries time (RFC 3339, ns), seq, type, and prev, the hash
// of the record before it. Each line is written as
//
//	{"hash":"<sha256 hex>",<the canonical record without hash>
//
// where the canonical record is encoding/json's rendering of the record's
// fields with keys sorted, and hash = SHA-256 over "{" followed by that
// rest of the line. Editing a field breaks the record's hash; deleting,
// reordering or inserting a record breaks seq or prev; cutting the tail is
// caught against the chain head kept in the state dir. The chain runs on
// across size-based rotation (audit.jsonl, audit.jsonl.1, ...); rotated
// files beyond the kept count are removed, and verification then starts
// at the oldest record still present.
//
// Durability: Append returns once the record is written and, in "always"
// mode, fsynced; concurrent appends share one fsync (group commit). In
// "batch" mode fsync runs on an interval, bounding what a crash can lose.
// A write or fsync failure is returned to every waiting caller (the daemon
// then fails closed) and the partial write is cut off, so the chain stays
// valid when the disk recovers.
package audit
