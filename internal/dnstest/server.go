// Package dnstest is an authoritative DNS server for tests of egress host
// names: records with chosen TTLs that a test changes while a session
// runs.
package dnstest

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// Server is a small authoritative DNS server on loopback: UDP
// and TCP on one port, A, AAAA and CNAME records with the TTLs it is
// given, NXDOMAIN for other names, and optionally truncated UDP answers.
type Server struct {
	Addr string // "127.0.0.1:port"

	mu       sync.Mutex
	records  map[string][]Record
	truncate bool
	queries  int
	udp      net.PacketConn
	tcp      net.Listener
}

// Record is an A/AAAA (Addr) or CNAME (CNAME) record.
type Record struct {
	Addr  netip.Addr
	CNAME string
	TTL   uint32
}

// Start listens on 127.0.0.1 (UDP and TCP, same port).
func Start() (*Server, error) {
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err != nil {
			_ = udp.Close()
			if attempt < 10 {
				continue // the TCP port was taken: another pair
			}
			return nil, err
		}
		s := &Server{Addr: udp.LocalAddr().String(), records: map[string][]Record{}, udp: udp, tcp: tcp}
		go s.serveUDP()
		go s.serveTCP()
		return s, nil
	}
}

// Set replaces the records of name.
func (s *Server) Set(name string, recs ...Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[strings.ToLower(strings.TrimSuffix(name, "."))+"."] = recs
}

// Truncate makes UDP answers truncated (the client must retry over TCP).
func (s *Server) Truncate(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = on
}

// Queries counts the questions answered.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Close stops the server.
func (s *Server) Close() {
	_ = s.udp.Close()
	_ = s.tcp.Close()
}

func (s *Server) serveUDP() {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := s.answer(buf[:n], true); resp != nil {
			_, _ = s.udp.WriteTo(resp, from) // a client that is gone asks again
		}
	}
}

func (s *Server) serveTCP() {
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = c.Close() }()
			var n uint16
			if binary.Read(c, binary.BigEndian, &n) != nil {
				return
			}
			msg := make([]byte, n)
			if _, err := io.ReadFull(c, msg); err != nil {
				return
			}
			if resp := s.answer(msg, false); resp != nil {
				_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...))
			}
		}()
	}
}

func (s *Server) answer(msg []byte, udp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries++
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if udp && s.truncate {
		rh.Truncated = true
	}
	name := strings.ToLower(q.Name.String())
	_, known := s.records[name]
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	if err := b.StartQuestions(); err != nil {
		return nil
	}
	if err := b.Question(q); err != nil {
		return nil
	}
	if err := b.StartAnswers(); err != nil {
		return nil
	}
	if known && !rh.Truncated {
		if err := s.addAnswers(&b, q, name); err != nil {
			return nil
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

// addAnswers adds the records of name, following CNAMEs for up to 10
// hops. The caller holds s.mu.
func (s *Server) addAnswers(b *dnsmessage.Builder, q dnsmessage.Question, name string) error {
	for hops := 0; hops < 10; hops++ {
		next := ""
		for _, r := range s.records[name] {
			owner := dnsmessage.MustNewName(name)
			hdr := dnsmessage.ResourceHeader{Name: owner, Class: dnsmessage.ClassINET, TTL: r.TTL}
			var err error
			switch {
			case r.CNAME != "":
				next = strings.ToLower(strings.TrimSuffix(r.CNAME, ".")) + "."
				err = b.CNAMEResource(hdr, dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(next)})
			case r.Addr.Is4() && q.Type == dnsmessage.TypeA:
				err = b.AResource(hdr, dnsmessage.AResource{A: r.Addr.As4()})
			case r.Addr.Is6() && q.Type == dnsmessage.TypeAAAA:
				err = b.AAAAResource(hdr, dnsmessage.AAAAResource{AAAA: r.Addr.As16()})
			}
			if err != nil {
				return err
			}
		}
		if next == "" {
			return nil
		}
		name = next
	}
	return nil
}
