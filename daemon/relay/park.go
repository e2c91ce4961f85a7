package relay

// reservedPark marks in parked a key reserved by reservePark, before
// parkRequest gives it its token.
const reservedPark = 0

// reservePark marks key as parked from before its request is pending
// until parkRequest parks it (or dropReservedPark, when it is not).
func (r *Relay) reservePark(key string) {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	if _, ok := r.parked[key]; !ok {
		r.parked[key] = reservedPark
	}
}

// dropReservedPark undoes reservePark for a request that is not parked
// after all.
func (r *Relay) dropReservedPark(key string) {
	r.parkMu.Lock()
	defer r.parkMu.Unlock()
	if r.parked[key] == reservedPark {
		delete(r.parked, key)
	}
}

// parkRequest keeps a client request (already in the pending table under
// key) from the server until ch yields; see Verdict.Park.
func (r *Relay) parkRequest(key string, out []byte, ch <-chan error, failed func(error) []byte) {
	r.parkMu.Lock()
	r.parkSeq++
	token := r.parkSeq // a later request that reuses the id is another park
	r.parked[key] = token
	r.parkMu.Unlock()
	r.Go("park", func() {
		var err error
		select {
		case err = <-ch:
		case <-r.endCh:
			err = ErrParkEnded
		}
		r.parkMu.Lock()
		if r.parked[key] != token {
			r.parkMu.Unlock()
			return // cancelled by the client (and perhaps its id reused)
		}
		if err == nil && r.parkClosed {
			err = ErrParkEnded
		}
		if err != nil {
			// Out of the pending table before it is no longer parked: a
			// response the server forges under its id in between would
			// otherwise be taken for its answer (found by
			// TestServerCannotAnswerParkedCall failing one run in 200).
			_, pending := r.pending.take(key)
			delete(r.parked, key)
			r.parkMu.Unlock()
			if pending {
				r.Stats.Denied[ClientToServer].Add(1)
				_ = r.writeClient(failed(err))
			}
			return
		}
		delete(r.parked, key)
		r.queued.Add(1)
		r.toServer <- queued{out: out}
		r.parkMu.Unlock()
	})
}

// cancelParked ends a parked request the client cancelled: it leaves the
// pending table (the inspector hears of it) and is never sent. It reports
// whether key was parked.
func (r *Relay) cancelParked(key string, raw []byte) bool {
	r.parkMu.Lock()
	_, ok := r.parked[key]
	delete(r.parked, key)
	r.parkMu.Unlock()
	if !ok {
		return false
	}
	if r.pending.cancel(key) {
		r.log.Debug("parked request cancelled by the client", "id", string(raw))
		if cn, ok := r.opts.Inspector.(Canceller); ok {
			cn.Cancelled(ClientToServer, raw)
		}
	}
	return true
}

// InBatch reports whether the message being decided is an element of a
// batch (which cannot be parked). Only for Inspector.FromClient, on the
// goroutine that calls it.
func (r *Relay) InBatch() bool { return r.inBatch[ClientToServer] }
