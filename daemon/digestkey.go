package daemon

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/request"
	"github.com/mcpcage/mcpcage/daemon/secrets"
)

// digestKeyName is the audit digest key's name in the daemon's key store
// (state_dir/keys, root only).
const digestKeyName = "audit-digest"

// loadDigester returns the install's audit digester, making its key on
// the first start. The key stays across restarts and upgrades, so equal
// arguments keep equal digests in the whole log; removing it starts
// digests that match none made before.
func loadDigester(keys *secrets.Store) (*audit.Digester, error) {
	v, err := keys.Get(digestKeyName)
	var key []byte
	switch {
	case errors.Is(err, secrets.ErrNotFound):
		if key, err = audit.NewDigestKey(); err != nil {
			return nil, err
		}
		if err := keys.Set(digestKeyName, hex.EncodeToString(key)); err != nil {
			return nil, fmt.Errorf("audit digest key: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("audit digest key: %w", err)
	default:
		if key, err = hex.DecodeString(v); err != nil || len(key) != audit.DigestKeySize {
			return nil, fmt.Errorf("the audit digest key (%s in the state directory's keys) is damaged: remove it to make a new one (args_digest values recorded before then will match none made after)", digestKeyName)
		}
	}
	return audit.NewDigester(key)
}

// digestsFor is the digester of uid's records (audit.Digester.ForUser),
// made once per uid.
func (d *Daemon) digestsFor(uid uint32) *audit.Digester {
	if v, ok := d.userDigests.Load(uid); ok {
		return v.(*audit.Digester)
	}
	v, _ := d.userDigests.LoadOrStore(uid, d.digests.ForUser(uid))
	return v.(*audit.Digester)
}

// digestOp answers OpDigest: the digest a record would carry of the
// JSON text req.Value. Only root may ask: the digests exist so that
// whoever reads the log cannot test guesses of a redacted value, and an
// answer to anyone else would be that test.
func (d *Daemon) digestOp(fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	if peer.UID != 0 {
		reply(fw, api.Reply{Code: api.CodeDenied, Error: "only root may compute audit digests (they are keyed so that readers of the log cannot test guesses of what redaction hid): run it with sudo"}, log)
		return
	}
	if req.User == "" {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: "name the user whose records to match (--user NAME, as the records' user field says): each user's digests have a key of their own"}, log)
		return
	}
	uid, known, err := uidOfName(req.User)
	if err == nil && !known {
		err = fmt.Errorf("no user %s: name the user as the records' user field says", req.User)
	}
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
		return
	}
	out, err := digestOf(d.digestsFor(uid), req.Name, req.Value)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: err.Error()}, log)
		return
	}
	replyData(fw, out, log)
}

// digestOf is the digest a record of dg's user gives value of kind
// (api.DigestArguments when empty, or api.DigestPrompt), read the way a
// session reads it.
func digestOf(dg *audit.Digester, kind, value string) (api.Digested, error) {
	if !json.Valid([]byte(value)) {
		return api.Digested{}, errors.New("the value is not one JSON value: give the arguments object (or the request's params) exactly as the client sent it")
	}
	switch kind {
	case "", api.DigestArguments:
		if !strings.HasPrefix(strings.TrimLeft(value, " \t\r\n"), "{") {
			return api.Digested{}, errors.New("a tools/call's arguments are a JSON object: give the object")
		}
		t, err := request.Read("tools/call", []byte(`{"name":"x","arguments":`+value+`}`), nil)
		if err != nil {
			return api.Digested{}, fmt.Errorf("the arguments are not what a session reads: %w", err)
		}
		return api.Digested{Field: "args_digest", Digest: argsOf(t).digest(dg)}, nil
	case api.DigestPrompt:
		return api.Digested{Field: "prompt_digest", Digest: dg.Digest(json.RawMessage(value))}, nil
	}
	return api.Digested{}, fmt.Errorf("unknown digest kind %q: %s or %s", kind, api.DigestArguments, api.DigestPrompt)
}
