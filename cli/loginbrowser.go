package cli

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"html"
	"net/http"
	"os"
	"path/filepath"
	"sync"
)

// loginBrowser binds a sign-in to the browser that starts it. The user
// opens http://127.0.0.1:PORT/start/NONCE (never the authorization URL
// itself); that page, usable once, sets a cookie and redirects to the
// authorization server; the answer is taken only from a browser holding
// the cookie. Another local user who learns the link cannot finish the
// sign-in with a code of their own account: their browser lacks the
// cookie, and a link opened twice aborts the sign-in. The browser is
// given a 0600 file that redirects to the start page, so the nonce is
// not in xdg-open's arguments either.
type loginBrowser struct {
	authURL string
	nonce   string
	cookie  string

	mu      sync.Mutex
	started int
}

const loginCookie = "mcpcage_login"

func newLoginBrowser(authURL string) *loginBrowser {
	return &loginBrowser{authURL: authURL, nonce: randomToken(), cookie: randomToken()}
}

func randomToken() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// startPath is the one-time page's path.
func (b *loginBrowser) startPath() string { return "/start/" + b.nonce }

// start serves the one-time page; it reports whether the link was opened
// more than once (the sign-in must then be abandoned).
func (b *loginBrowser) start(w http.ResponseWriter, r *http.Request) (twice bool) {
	b.mu.Lock()
	b.started++
	n := b.started
	b.mu.Unlock()
	if n > 1 {
		http.Error(w, "mcpcage: this sign-in link was already used; the sign-in is abandoned: run mcpcage login again", http.StatusGone)
		return true
	}
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: b.cookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, b.authURL, http.StatusFound)
	return false
}

// sameBrowser reports whether r comes from the browser that opened the
// start page.
func (b *loginBrowser) sameBrowser(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(b.cookie)) == 1
}

// redirectFile writes a page (mode 0600, in a 0700 directory) that sends
// the browser to link; it returns its path and a cleanup.
func redirectFile(link string) (string, func(), error) {
	dir, err := os.MkdirTemp("", "mcpcage-login-")
	if err != nil {
		return "", nil, err
	}
	p := filepath.Join(dir, "sign-in.html")
	page := fmt.Sprintf(`<!doctype html><meta http-equiv="refresh" content="0;url=%s"><a href="%s">Continue to the sign-in</a>`,
		html.EscapeString(link), html.EscapeString(link))
	if err := os.WriteFile(p, []byte(page), 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, err
	}
	return p, func() { _ = os.RemoveAll(dir) }, nil
}
