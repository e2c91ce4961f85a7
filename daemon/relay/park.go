package relay

// parkRequest keeps a client request (already in the pending table under
// key) from the server until ch yields; see Verdict.Park.
func (r *Relay) parkRequest(key string, out []byte, ch <-chan error, failed func(error) []byte) {
	r.parkMu.Lock()
	r.parkSeq++
	token := r.parkSeq // a later request that reuses the id is another park
	r.parked[key] = token
	r.parkMu.Unlock()
	go func() {
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
		delete(r.parked, key)
		if err == nil && r.parkClosed {
			err = ErrParkEnded
		}
		if err != nil {
			r.parkMu.Unlock()
			r.answerKept(key, failed, err)
			return
		}
		r.queued.Add(1)
		r.toServer <- queued{out: out}
		r.parkMu.Unlock()
	}()
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
