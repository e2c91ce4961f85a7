package daemon

import (
	"fmt"
	"net/netip"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// setRefusedAnswers keeps the DNS answers a session's egress rules refuse
// (egress.PublicAnswers), so that a connection denied to one of them says
// why in its net.denied record, and logs each refusal once, with what to
// do when the address is meant.
func (s *session) setRefusedAnswers(refused []egress.Refused) {
	old := s.refusedAnswers.Load()
	if len(refused) == 0 && (old == nil || len(*old) == 0) {
		return
	}
	m := make(map[netip.Addr]string, len(refused))
	for _, r := range refused {
		a := r.Rule.Prefix.Addr()
		why := s.refusedRule(r)
		m[a] = why
		if old == nil || (*old)[a] != why {
			s.log.Warn("egress refuses an address a host name resolved to",
				"entry", s.egressEntry(r.Rule.Index), "name", r.Rule.Name, "addr", a.String(), "why", r.Why,
				"fix", "if the address is meant, list it (or its range) in egress, or the name's domain in private_domains")
		}
	}
	s.refusedAnswers.Store(&m)
}

// refusedAnswer says why a denied connection's address is not allowed
// when it is a refused DNS answer ("" otherwise).
func (s *session) refusedAnswer(a netip.Addr) string {
	m := s.refusedAnswers.Load()
	if m == nil {
		return ""
	}
	return (*m)[a.Unmap()]
}

// refusedRule is the rule a net.denied record names for a connection to
// a refused answer.
func (s *session) refusedRule(r egress.Refused) string {
	return fmt.Sprintf("egress %q: %s resolved to %s, refused: %s (a host name reaches public addresses only, against DNS rebinding)",
		s.egressEntry(r.Rule.Index), r.Rule.Name, r.Rule.Prefix.Addr(), r.Why)
}

// egressEntry is the server's egress entry at index i, as written.
func (s *session) egressEntry(i int) string {
	if s.srv == nil || i < 0 || i >= len(s.srv.Egress) {
		return fmt.Sprintf("#%d", i)
	}
	return s.srv.Egress[i]
}
