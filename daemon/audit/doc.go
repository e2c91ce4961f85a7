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
// reordering or inserting a record breaks seq or prev.
//
// A record is appended as a [Record] (a map) or as [Fields] (a list,
// which the records of every call use: building and encoding it costs
// about a third less than a map of the same fields). Both are encoded
// into the same line; nothing in the log says which one was appended.
//
// # Bounded records
//
// Values in records come from clients and servers, so every record is
// bounded when it is encoded, whoever built it. A string, map key, number
// or raw JSON value longer than [MaxString] (1 KiB) is replaced, wherever
// it is nested, by
//
//	{"bytes":<length>,"sha256":"<hex of the whole value>","truncated":"<prefix>"}
//
// where the prefix is the value's first bytes (at most 1 KiB, cut on a
// rune boundary, invalid UTF-8 replaced by U+FFFD; for raw JSON, the text
// of the JSON as received). A long map key keeps its prefix followed by
// "…[sha256:<hex> bytes:<n>]" (the whole key's digest and length, so no
// value is lost: a key already equal to another's bounded form is itself
// long and bounded in turn); so does a long string inside a string-only
// map. If a record still exceeds [MaxRecord] (64 KiB), its largest fields
// other than type, time, seq, prev, session, agent, agent_instance, user
// and server are replaced by the same object with an empty "truncated",
// sha256 and bytes then describing the field's JSON encoding, until it
// fits. Raw JSON that is not valid JSON is recorded as a string.
//
// # Segments, rotation and the head
//
// The log rotates by size (audit.jsonl, audit.jsonl.1, ...; files past
// the kept count are removed). Every file is a segment that opens with an
// [SegmentType] record naming its number ("segment": 1, 2, ...) and the
// oldest segment the log still keeps ("oldest_segment"); its prev is the
// hash of the previous segment's last record. The chain head (seq, hash,
// segment) is kept in the state dir. Verify names what was removed:
// records inside a file, a middle segment (the segment numbers jump), the
// oldest kept segment (the newest header says it should be there), or the
// end (the head is ahead of the log: a whole segment or records). Logs
// written before segments verify as before up to their first header.
//
// # Durability and failures
//
// Append returns once the record is written and, in "always" mode,
// fdatasynced; AppendDurable queues the record and returns a channel that
// says when, so a caller can go on (the daemon's relay holds the call and
// reads the next). Every record queued while a sync runs shares the next
// one (group commit). AppendAsync's records never cause a sync of their
// own: the next durable record's sync, or the interval, covers them. In
// "batch" mode the sync runs on the interval only, bounding what a crash
// can lose, and AppendDurable writes the record (with whatever is queued)
// on its caller's goroutine, so its channel has yielded when it returns:
// no hand-off to the writer goroutine and back on a call's path.
// AppendDurableNow does the same in "always" mode, fdatasync included,
// for a caller with nothing else to do meanwhile, when no commit is under
// way (else it queues). AppendNow is AppendAsync for records written on
// a session's own goroutine (a tool's result, once the client has it):
// written at once, never synced, when no commit is under way, so the
// writer goroutine is not woken for them. Segments are not preallocated: on this project's ext4 test
// disk zero-filled segments saved about 10% of an fdatasync, but every
// reader of the file (tail -f, log shippers, audit verify) would then meet
// a run of NULs at its end. A batch
// takes Append's records before AppendAsync's and closes at 64 KiB, so a
// flood of observations delays a call by at most one batch. A write,
// fsync or head failure is returned to every waiting caller (the daemon
// then fails closed) and the partial write is cut off, so the chain stays
// valid when the disk recovers; if it cannot be cut off, the log refuses
// writes until it can. Every record that is not written (queue full,
// write or encode failure, closed) is reported to Options.OnDrop, whether
// or not a caller is told.
package audit
