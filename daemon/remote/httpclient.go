package remote

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/bpf/egress"
)

// ClientOptions are an administrator's limits on where a remote server's
// traffic (the server, its authorization server) may go.
type ClientOptions struct {
	// Hosts are the host names (or host:port) requests may go to; the
	// server URL's host is always among them.
	Hosts []string
	// CAFile is a PEM bundle trusted besides the system's roots.
	CAFile string
	// Timeout bounds connecting and waiting for a response's headers (an
	// SSE body may then stream for as long as the call takes).
	Timeout time.Duration
	// Server names the server in errors.
	Server string
	// DNSServers and PrivateDomains: the daemon's dns_servers and
	// private_domains (publicDialer).
	DNSServers, PrivateDomains []string
	// Owner, for a user's own server, is the user: its connections are
	// made with the user's credentials (dialAs), and one that reaches a
	// program of this host is kept only when the program is the user's
	// (checkPeer). nil for an administrator's server.
	Owner *Owner
	// LocalUIDs, for an administrator's server (Owner nil), are the uids
	// one of which must run a program of this host its connections reach
	// (its local_users; root when empty), unless AnyLocalUser: a user who
	// takes the port while the service is down must not receive every
	// user's tokens and calls (checkPeer).
	LocalUIDs    []uint32
	AnyLocalUser bool
}

// ErrHostNotAllowed wraps requests to hosts the server's config does not
// list.
var ErrHostNotAllowed = errors.New("host not allowed")

// Bounds of what the transport buffers of a server's answers.
const (
	maxResponseHeader = 64 << 10
	maxStreamBuffer   = 512 << 10
)

// NewHTTPClient builds the client a remote server's traffic uses: TLS
// verification always on (with the configured CA bundle added), plain
// http only to loopback addresses, requests only to the allowed hosts
// (redirects included), host names only at public addresses unless
// trusted (publicDialer), credentials only to the origin they were given
// for (redirects too: checkRedirect).
func NewHTTPClient(o ClientOptions) (*http.Client, error) {
	if len(o.LocalUIDs) == 0 {
		o.LocalUIDs = []uint32{0} // root's programs only
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file of [servers.%s]: %w", o.Server, err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file of [servers.%s]: %s holds no PEM certificate", o.Server, o.CAFile)
		}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	dialer := &net.Dialer{Timeout: min(timeout, 15*time.Second), KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 nil, // the daemon's environment does not redirect its traffic
		DialContext:           (&publicDialer{dialer: dialer, dns: &egress.DNS{Servers: o.DNSServers, PrivateDomains: o.PrivateDomains}, owner: o.Owner, localUIDs: o.LocalUIDs, anyLocal: o.AnyLocalUser}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   min(timeout, 15*time.Second),
		ResponseHeaderTimeout: timeout,
		// As many as a session may have requests open (maxInFlight):
		// a connection closed after a burst is one made again, and
		// checked again (checkPeer reads every socket of the host).
		MaxIdleConnsPerHost: maxInFlight,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
		// A server's answer headers are kept while its answer streams:
		// bounded as an answer's first 64 KiB are (Conn.big).
		MaxResponseHeaderBytes: maxResponseHeader,
		// HTTP/2 buffers what a stream receives until it is read; a
		// request waiting for the session's big answer slot does not
		// read, so each stream's buffer is bounded (the connection's
		// stays large: a stream that waits never starves another).
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: maxStreamBuffer},
	}
	hosts := make([]string, 0, len(o.Hosts))
	for _, h := range o.Hosts {
		hosts = append(hosts, strings.ToLower(h))
	}
	guard := &hostGuard{next: tr, hosts: hosts, server: o.Server}
	return &http.Client{
		Transport:     guard,
		CheckRedirect: guard.checkRedirect,
	}, nil
}

// credentialHeaders are the headers of a request that may carry a
// credential: the bridge's bearer token and session, a token request's
// client authentication (HTTP Basic).
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Cookie2", "Mcp-Session-Id"}

// checkRedirect follows a redirect to an allowed host, with the
// request's credentials only when it stays at the first request's
// origin (scheme, host and port). Go's client alone keeps Authorization
// on a redirect to another port of the host, or to a subdomain: the
// server's bearer token would go to whatever listens there.
func (g *hostGuard) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("more than 5 redirects")
	}
	if err := g.check(req.URL); err != nil {
		return err
	}
	if !sameOrigin(req.URL, via[0].URL) {
		for _, h := range credentialHeaders {
			req.Header.Del(h)
		}
	}
	return nil
}

// sameOrigin reports whether a and b have the same scheme, host and port
// (a default port written or not).
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && strings.EqualFold(a.Hostname(), b.Hostname()) && originPort(a) == originPort(b)
}

// originPort is u's port, the scheme's default when it names none.
func originPort(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// hostGuard refuses requests outside the allowed hosts and plain http
// outside loopback.
type hostGuard struct {
	next   http.RoundTripper
	hosts  []string
	server string
}

func (g *hostGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := g.check(req.URL); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	return g.next.RoundTrip(req)
}

func (g *hostGuard) check(u *url.URL) error {
	if err := CheckScheme(u); err != nil {
		return err
	}
	h := strings.ToLower(u.Hostname())
	hp := strings.ToLower(u.Host)
	if slices.Contains(g.hosts, h) || slices.Contains(g.hosts, hp) {
		return nil
	}
	return fmt.Errorf("%w: %s is not among the hosts of [servers.%s] (add it to hosts if the server's sign-in lives there)", ErrHostNotAllowed, u.Host, g.server)
}

// CheckScheme accepts https URLs, and http ones to loopback addresses
// only. Its errors name the origin alone: a url's path may hold a
// credential.
func CheckScheme(u *url.URL) error {
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if Loopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%s://%s: plain http is allowed only to loopback addresses; use https", u.Scheme, u.Host)
	}
	return fmt.Errorf("%s://%s: the scheme must be https (or http to a loopback address)", u.Scheme, u.Host)
}

// Loopback reports whether host is localhost or a loopback address.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
