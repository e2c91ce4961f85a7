package authanswer

import (
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name    string
		query   string
		want    Answer
		refused string
	}{
		{"a code", "code=c1&state=s1", Answer{State: "s1", Code: "c1"}, ""},
		{"a code and its issuer", "code=c1&state=s1&iss=https%3A%2F%2Fas.example", Answer{State: "s1", Code: "c1", Issuer: str("https://as.example")}, ""},
		{"an empty issuer is not none", "code=c1&state=s1&iss=", Answer{State: "s1", Code: "c1", Issuer: str("")}, ""},
		{"an error", "error=access_denied&error_description=no&state=s1&iss=x", Answer{State: "s1", Error: "access_denied no", Issuer: str("x")}, ""},
		{"an error with a code", "error=e&code=c1&state=s1", Answer{State: "s1", Error: "e"}, ""},
		{"neither", "state=s1", Answer{State: "s1", Error: NoCode}, ""},
		{"an error on several lines", "error=e&error_description=a%0Amcpcage%3A+signed+in%1B%5B2J", Answer{Error: "e a mcpcage: signed in [2J"}, ""},
		{"iss twice", "iss=https%3A%2F%2Fevil.example&code=c1&state=s1&iss=https%3A%2F%2Fhonest.example", Answer{}, `"iss" 2 times`},
		{"code twice", "code=c1&code=c2&state=s1", Answer{}, `"code" 2 times`},
		{"state twice", "code=c1&state=s1&state=s2", Answer{}, `"state" 2 times`},
		{"error twice", "error=a&error=b&state=s1", Answer{}, `"error" 2 times`},
		{"another parameter twice", "code=c1&state=s1&session_state=a&session_state=b", Answer{State: "s1", Code: "c1"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(q)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Parse = %+v, %v; want refused with %q", got, err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tc.want.State || got.Code != tc.want.Code || got.Error != tc.want.Error || (got.Issuer == nil) != (tc.want.Issuer == nil) ||
				(got.Issuer != nil && *got.Issuer != *tc.want.Issuer) {
				t.Fatalf("Parse = %+v (issuer %v), want %+v", got, got.Issuer, tc.want)
			}
		})
	}
}

func TestOneLineBounds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"short", 10, "short"},
		{"a\nb\tc\u202ed", 20, "a b c d"},
		{strings.Repeat("é", 10), 5, "éé..."},
		{strings.Repeat("x", 400), MaxErrorText, strings.Repeat("x", MaxErrorText) + "..."},
	} {
		if got := OneLine(tc.in, tc.max); got != tc.want {
			t.Errorf("OneLine(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}

func TestCarries(t *testing.T) {
	for _, tc := range []struct {
		query, state string
		want         bool
	}{
		{"code=c&state=s1", "s1", true},
		{"code=c&state=s2", "s1", false},
		{"code=c", "s1", false},
		{"code=c&state=s2&state=s1", "s1", true}, // refused by Parse, for this sign-in
		{"code=c&state=", "", false},
	} {
		q, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		if got := Carries(q, tc.state); got != tc.want {
			t.Errorf("Carries(%q, %q) = %v, want %v", tc.query, tc.state, got, tc.want)
		}
	}
}
