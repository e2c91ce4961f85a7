package daemon

import (
	"strings"
	"testing"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/internal/authanswer"
)

// What mcpcage login hands on comes from any program that can reach the
// socket: loginAnswer bounds its texts to one line and keeps a refusal
// ahead of a code sent with it.
func TestLoginAnswer(t *testing.T) {
	long := strings.Repeat("x", 100000)
	for _, tc := range []struct {
		name                 string
		req                  api.Request
		code, errText        string
		refused              string // "" when not refused
		issuerUnknown, bound bool
	}{
		{"a code", api.Request{AuthCode: "c1", AuthIssuerSent: true}, "c1", "", "", false, false},
		{"an older mcpcage login", api.Request{AuthCode: "c1"}, "c1", "", "", true, false},
		{"an error answer", api.Request{AuthError: "access_denied no", AuthIssuerSent: true}, "", "access_denied no", "", false, false},
		{"an error on several lines", api.Request{AuthError: "e\nmcpcage: signed in\x1b[2J", AuthIssuerSent: true}, "", "e mcpcage: signed in [2J", "", false, false},
		{"a huge error", api.Request{AuthError: long, AuthIssuerSent: true}, "", "", "", false, true},
		{"refused, with a code beside it", api.Request{AuthCode: "c1", AuthRefused: "the answer gives \"iss\" 2 times", AuthIssuerSent: true}, "c1", "", "the answer gives \"iss\" 2 times", false, false},
		{"refused, huge", api.Request{AuthRefused: long, AuthIssuerSent: true}, "", "", "xxx", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := loginAnswer(tc.req)
			if a.Code != tc.code || a.IssuerUnknown != tc.issuerUnknown {
				t.Errorf("code %q, issuer unknown %v; want %q, %v", a.Code, a.IssuerUnknown, tc.code, tc.issuerUnknown)
			}
			switch {
			case tc.bound && tc.refused == "":
				if len(a.Error) > authanswer.MaxErrorText+len("...") || !strings.HasSuffix(a.Error, "...") {
					t.Errorf("error of %d bytes, want at most %d, cut", len(a.Error), authanswer.MaxErrorText)
				}
			case a.Error != tc.errText:
				t.Errorf("error %q, want %q", a.Error, tc.errText)
			}
			switch {
			case tc.refused == "" && a.Refused != nil:
				t.Errorf("refused: %v", a.Refused)
			case tc.refused != "" && (a.Refused == nil || !strings.Contains(a.Refused.Error(), tc.refused)):
				t.Errorf("refused = %v, want it to say %q", a.Refused, tc.refused)
			case tc.bound && a.Refused != nil && len(a.Refused.Error()) > maxRefusedText+100:
				t.Errorf("refusal of %d bytes", len(a.Refused.Error()))
			}
		})
	}
}
