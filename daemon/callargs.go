package daemon

import (
	"encoding/json"
	"fmt"

	"github.com/mcpcage/mcpcage/daemon/ask"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/request"
)

// callArgs are a request's arguments as its decision has them: decoded,
// or, past request.MaxArgumentValues, only counted and kept as sent.
type callArgs struct {
	values map[string]any // decoded; nil when absent, or unread
	unread int            // > 0: the values they hold, not decoded
	raw    []byte         // their bytes as sent, when unread
}

// argsOf are the arguments t read.
func argsOf(t request.Target) callArgs {
	return callArgs{values: t.Args, unread: t.Unread, raw: t.RawArgs}
}

// unreadReason says why the values are not there ("" when they are).
func (a callArgs) unreadReason() string {
	return request.Target{Unread: a.unread}.UnreadReason()
}

// digest is the record's args_digest under dg: of the decoded value, or
// of the bytes as sent when unread.
func (a callArgs) digest(dg *audit.Digester) string {
	if a.unread > 0 {
		return dg.Digest(json.RawMessage(a.raw))
	}
	return dg.Digest(a.values)
}

// recorded is what the record keeps of them (audit_arguments mode), nil
// for nothing.
func (a callArgs) recorded(mode string, secrets []string) any {
	if a.unread > 0 {
		if mode == audit.ArgsDigest {
			return nil
		}
		return fmt.Sprintf("[not read: %d values, more than the %d mcpcage reads; args_digest is of the bytes as sent]", a.unread, request.MaxArgumentValues)
	}
	return audit.Arguments(a.values, mode, secrets)
}

// requestDigest is the digest of the request they belong to, as an
// "allow once" binds it: of ask.Request (of the bytes as sent when unread,
// which no decoded request's digest equals), keyed with dg, the
// delegating user's digester.
func (a callArgs) requestDigest(dg *audit.Digester, method, kind, name string) string {
	if a.unread > 0 {
		return dg.Bytes(ask.RequestOfBytes(method, kind, name, a.raw))
	}
	return dg.Bytes(ask.Request(method, kind, name, a.values))
}

// maxDecodedForRecord bounds a peer's JSON the daemon decodes only to keep
// in a record (a result's content with audit_arguments = "full", a
// server's request to the client): a record keeps at most 64 KiB, and
// decoding builds a Go value per JSON value (a 60 MiB message of small
// values took 2.4 GiB). Larger ones are recorded by their digest only.
const maxDecodedForRecord = 1 << 20
