package relay

import (
	"errors"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Cancellation (notifications/cancelled, params.requestId): the sender of
// a request gives up on it, and the receiver SHOULD NOT answer. A
// cancelled request therefore leaves the pending table once the
// notification has been forwarded, so it neither holds a slot forever nor
// earns an error when the server later dies; an answer that comes anyway
// is dropped. This holds in both directions: the client cancelling its
// request to the server, and the server cancelling its request to the
// client.

const methodCancelled = "notifications/cancelled"

type cancelled struct {
	key   string
	rawID []byte
}

// noteCancel reads the request id a kept notifications/cancelled names and
// queues it for applyCancels. It reports false when the notification must
// not be forwarded: a server naming a request in the daemon's own
// namespace would cancel the daemon's request to the client, and a
// requestId the receiver could read as another request than mcpcage does
// ({"requestId":1,"REQUESTID":2}: an mcp-go peer reads 2) would cancel a
// request mcpcage keeps waiting for, or one of the daemon's own.
func (r *Relay) noteCancel(d Direction, msg []byte, e *wire.Envelope) bool {
	// One member, strictly: no map of every member, params may hold millions.
	sp, ok, err := wire.StrictMember(e.Params.Of(msg), "requestId")
	if errors.Is(err, wire.ErrAmbiguous) {
		r.log.Warn("dropped an ambiguous cancellation", "direction", d.String(), "reason", r.scrubLog(err.Error()))
		return false
	}
	if !ok {
		return true // nothing we can correlate: relay it as it is
	}
	raw := sp.Of(e.Params.Of(msg))
	key := wire.IDKey(raw)
	if key == "" {
		return true
	}
	if d == ServerToClient && ownKey(key) {
		r.log.Warn("dropped cancellation from server of a request it did not send", "id", string(raw))
		return false
	}
	if d == ClientToServer && r.cancelParked(key, raw) {
		return false // the server never saw the request
	}
	r.cancels[d] = append(r.cancels[d], cancelled{key: key, rawID: append([]byte(nil), raw...)})
	return true
}

// applyCancels removes the requests cancelled by the message just
// forwarded in direction d (the requests themselves went the same way).
// It runs on d's goroutine.
func (r *Relay) applyCancels(d Direction) {
	if len(r.cancels[d]) == 0 {
		return
	}
	r.applyCancelList(d, r.cancels[d])
	clear(r.cancels[d])
	r.cancels[d] = r.cancels[d][:0]
}

// takeCancels hands over the cancellations noted for the message being
// relayed in direction d, for a message forwarded later.
func (r *Relay) takeCancels(d Direction) []cancelled {
	if len(r.cancels[d]) == 0 {
		return nil
	}
	cs := r.cancels[d]
	r.cancels[d] = nil
	return cs
}

// applyCancelList removes the requests cancelled by a forwarded message.
func (r *Relay) applyCancelList(d Direction, cs []cancelled) {
	t := r.pending
	if d == ServerToClient {
		t = r.srvCalls
	}
	for _, c := range cs {
		if !t.cancel(c.key) {
			continue
		}
		r.log.Debug("request cancelled by its sender", "direction", d.String(), "id", string(c.rawID))
		if cn, ok := r.opts.Inspector.(Canceller); ok {
			cn.Cancelled(d, c.rawID)
		}
	}
}
