package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// describe turns a transport error into one line: what failed and what
// to do about it.
func describe(u *url.URL, server string, err error) string {
	host := u.Host
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var recordHeader tls.RecordHeaderError
	switch {
	case errors.As(err, &dns):
		return fmt.Sprintf("cannot resolve %s (%s): check url in [servers.%s] and this host's DNS", dns.Name, dnsWhy(dns), server)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("TLS: %s's certificate is signed by an authority this host does not trust: set ca_file in [servers.%s] if it uses a private CA", host, server)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("TLS: %s's certificate is not valid for that name (%v): check url in [servers.%s]", host, hostErr, server)
	case errors.As(err, &invalid):
		return fmt.Sprintf("TLS: %s's certificate is invalid (%v)", host, invalid)
	case errors.As(err, &verify):
		return fmt.Sprintf("TLS: %s's certificate failed verification (%v): set ca_file in [servers.%s] if it uses a private CA", host, verify.Err, server)
	case errors.As(err, &recordHeader):
		return fmt.Sprintf("TLS: %s did not answer with TLS: check the scheme of url in [servers.%s]", host, server)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("cannot connect to %s: connection refused (is the server running?)", host)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return fmt.Sprintf("%s did not answer in time: raise timeout in [servers.%s] if it is slow", host, server)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("TLS: %s did not answer with TLS: check the scheme of url in [servers.%s]", host, server)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		return fmt.Sprintf("the connection to %s dropped", host)
	}
	return fmt.Sprintf("cannot reach %s: %v", host, unwrapURL(err))
}

func dnsWhy(e *net.DNSError) string {
	if e.IsNotFound {
		return "no such host"
	}
	if e.IsTimeout {
		return "timed out"
	}
	return e.Err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// transient errors may be retried when the request is idempotent.
func transient(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || isTimeout(err)
}

// statusLine is resp's status as "401 Unauthorized": the code and the
// standard text for it, never the server's own reason phrase, which is
// text it chose ("401 Unauthorized. This server moved to ...: run
// mcpcage server add ...", escape sequences) placed beside mcpcage's own
// words (found by a review).
func statusLine(resp *http.Response) string {
	if t := http.StatusText(resp.StatusCode); t != "" {
		return fmt.Sprintf("%d %s", resp.StatusCode, t)
	}
	return strconv.Itoa(resp.StatusCode)
}

// statusMessage explains an HTTP status the bridge cannot relay.
func statusMessage(resp *http.Response, server string) string {
	switch {
	case resp.StatusCode >= 500:
		return fmt.Sprintf("%s answered %s: the remote server failed; try again later", server, statusLine(resp))
	case resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Sprintf("%s answered %s: too many requests; try again later", server, statusLine(resp))
	}
	return fmt.Sprintf("%s answered %s", server, statusLine(resp))
}

// forbidden explains a 403: a scope the token lacks (RFC 6750 §3.1) or a
// plain refusal.
func forbidden(resp *http.Response, server string) string {
	ch := ParseChallenge(resp.Header.Get("WWW-Authenticate"))
	if ch.Params["error"] == "insufficient_scope" {
		scope := ch.Params["scope"]
		if scope == "" {
			scope = "a scope this sign-in lacks"
		}
		return fmt.Sprintf("%s refused the call: it needs scope %q, which this agent's sign-in does not hold (the agent's scopes are set in [agents.NAME] scopes)", server, scope)
	}
	return fmt.Sprintf("%s refused the request (%s)", server, statusLine(resp))
}

// movedAway reports whether resp came from another origin than its first
// request's: a redirect there, to which no credentials were sent.
func movedAway(resp *http.Response) bool {
	first := resp.Request
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	return first != resp.Request && !sameOrigin(first.URL, resp.Request.URL)
}

// originOf is u's scheme://host[:port].
func originOf(u *url.URL) string { return u.Scheme + "://" + u.Host }

// movedMessage explains a refusal from the origin a redirect led to.
func movedMessage(resp *http.Response, server string) string {
	return fmt.Sprintf("%s redirected the request to %s, another origin, which mcpcage sends no credentials to (it would hand them to whoever answers there), and that origin answered %s: if the server moved, change its url (mcpcage server add %s --url NEW, or ask your administrator), then sign in (mcpcage login %s)",
		server, originOf(resp.Request.URL), statusLine(resp), server, server)
}

// signInMessage is what a failed renewal tells the client.
func signInMessage(err error, server string) string {
	var si *SignInError
	if errors.As(err, &si) {
		return si.Msg
	}
	return fmt.Sprintf("%s needs you to sign in again (%v): run `mcpcage login %s`", server, err, server)
}

// headerValue encodes a value for an Mcp-* header: as it is when it is
// plain visible ASCII, otherwise as =?base64?...?= (SEP-2243).
func headerValue(v string) string {
	plain := v != "" && v[0] != ' ' && v[len(v)-1] != ' '
	for i := 0; plain && i < len(v); i++ {
		plain = v[i] >= 0x20 && v[i] <= 0x7e
	}
	if plain {
		return v
	}
	return "=?base64?" + base64.StdEncoding.EncodeToString([]byte(v)) + "?="
}

// Challenge is one parsed WWW-Authenticate challenge.
type Challenge struct {
	Scheme string
	Params map[string]string
}

// ParseChallenge reads the first challenge of a WWW-Authenticate value
// (auth-params with quoted or token values).
func ParseChallenge(h string) Challenge {
	ch := Challenge{Params: map[string]string{}}
	h = strings.TrimSpace(h)
	sp := strings.IndexByte(h, ' ')
	if sp < 0 {
		ch.Scheme = h
		return ch
	}
	ch.Scheme, h = h[:sp], h[sp+1:]
	for len(h) > 0 {
		h = strings.TrimLeft(h, " ,")
		eq := strings.IndexByte(h, '=')
		if eq <= 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(h[:eq]))
		h = strings.TrimLeft(h[eq+1:], " ")
		var val string
		if strings.HasPrefix(h, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(h) && h[i] != '"'; i++ {
				if h[i] == '\\' && i+1 < len(h) {
					i++
				}
				b.WriteByte(h[i])
			}
			val, h = b.String(), h[min(i+1, len(h)):]
		} else {
			end := strings.IndexAny(h, ", ")
			if end < 0 {
				end = len(h)
			}
			val, h = h[:end], h[end:]
		}
		if _, dup := ch.Params[key]; !dup {
			ch.Params[key] = val
		}
	}
	return ch
}
