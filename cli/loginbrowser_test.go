package cli

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// TestLoginBrowser: the start page works once and sets the cookie the
// callback wants; a second opening abandons the sign-in; an answer from
// a browser without the cookie (another local user's) is refused.
func TestLoginBrowser(t *testing.T) {
	b := newLoginBrowser("https://as.example/authorize?state=s")
	first := httptest.NewRecorder()
	if b.start(first, httptest.NewRequest("GET", b.startPath(), nil)) {
		t.Fatal("the first opening counted as a second")
	}
	if first.Code != http.StatusFound || first.Header().Get("Location") != "https://as.example/authorize?state=s" {
		t.Fatalf("start page: %d %q", first.Code, first.Header().Get("Location"))
	}
	cookies := first.Result().Cookies()
	if len(cookies) != 1 || !cookies[0].HttpOnly {
		t.Fatalf("cookies: %+v", cookies)
	}
	for _, tc := range []struct {
		name   string
		cookie *http.Cookie
		want   bool
	}{
		{"the browser that started", cookies[0], true},
		{"no cookie", nil, false},
		{"another value", &http.Cookie{Name: loginCookie, Value: "guess"}, false},
	} {
		r := httptest.NewRequest("GET", "/callback?state=s&code=c", nil)
		if tc.cookie != nil {
			r.AddCookie(tc.cookie)
		}
		if got := b.sameBrowser(r); got != tc.want {
			t.Errorf("%s: sameBrowser = %v, want %v", tc.name, got, tc.want)
		}
	}
	second := httptest.NewRecorder()
	if !b.start(second, httptest.NewRequest("GET", b.startPath(), nil)) || second.Code != http.StatusGone {
		t.Fatalf("a second opening: %d, not reported", second.Code)
	}
	if len(second.Result().Cookies()) != 0 {
		t.Fatal("a second opening got the cookie")
	}
}

func TestRedirectFileIsPrivate(t *testing.T) {
	p, cleanup, err := redirectFile("http://127.0.0.1:1/start/n")
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if st.Mode().Perm() != 0o600 || !strings.Contains(string(b), "http://127.0.0.1:1/start/n") {
		t.Fatalf("mode %v, page %s", st.Mode().Perm(), b)
	}
}
