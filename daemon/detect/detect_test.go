package detect

import (
	"reflect"
	"strings"
	"testing"
)

// values returns the detector and value of each finding.
func values(text string, fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f.Detector)+"="+text[f.Start:f.End])
	}
	return out
}

func mustNew(t testing.TB, b []Detector, c []Custom) *Set {
	t.Helper()
	s, err := New(b, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const (
	jwtExample = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	pemBlock   = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yHY2e8Q2mXw==\n-----END RSA PRIVATE KEY-----"
)

var (
	ghToken     = "ghp_" + strings.Repeat("aB3", 12)                         // 36 after the prefix
	ghPAT       = "github_pat_11ABCDEFG0" + strings.Repeat("x9_Y", 20)       // fine-grained
	googleKey   = "AIzaSyA" + strings.Repeat("x1", 16)                       // AIza + 35
	slackToken  = "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx" // bot token shape
	openAIKey   = "sk-proj-abcDEF1234567890ghijKLMN"
	anthropic   = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789_ABCDEF-xyz"
	stripeKey   = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
	stripeRKey  = "rk_live_4eC39HqLyjWDarjtT1zdp7dc"
	awsExample  = "AKIAIOSFODNN7EXAMPLE"
	awsSession  = "ASIAY34FZKBOKMUTVV7A"
	stripeTest  = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
	notGHShort  = "ghp_" + strings.Repeat("aB3", 11)
	notGoogle34 = "AIzaSyA" + strings.Repeat("x1", 15) + "x"
)

func TestScanBuiltins(t *testing.T) {
	set := mustNew(t, nil, nil)
	tests := []struct {
		name string
		text string
		want []string // "detector=value"
	}{
		// AWS
		{"aws key", "aws_access_key_id = " + awsExample + "\n", []string{"aws_access_key=" + awsExample}},
		{"aws session key", `{"AccessKeyId":"` + awsSession + `"}`, []string{"aws_access_key=" + awsSession}},
		{"AKIA alone", "the prefix AKIA means a long-term key", nil},
		{"aws glued after", awsExample + "X", nil},
		{"aws glued before", "x" + awsExample, nil},
		{"aws too short", "AKIAIOSFODNN7EXAMPL", nil},
		{"aws lower case", strings.ToLower(awsExample), nil},

		// Private keys
		{"pem block", "key:\n" + pemBlock + "\nend", []string{"private_key=" + pemBlock}},
		{"pem header alone", "-----BEGIN OPENSSH PRIVATE KEY-----", []string{"private_key=-----BEGIN OPENSSH PRIVATE KEY-----"}},
		{"pem header and body, no end", "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n\n(truncated)",
			[]string{"private_key=-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}},
		{"pgp private block", "-----BEGIN PGP PRIVATE KEY BLOCK-----", []string{"private_key=-----BEGIN PGP PRIVATE KEY BLOCK-----"}},
		{"encrypted pkcs8", "-----BEGIN ENCRYPTED PRIVATE KEY-----", []string{"private_key=-----BEGIN ENCRYPTED PRIVATE KEY-----"}},
		{"public key", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----", nil},
		{"certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", nil},
		{"prose", "never paste your PRIVATE KEY into a chat", nil},

		// GitHub
		{"github classic", "token " + ghToken + " ok", []string{"github_token=" + ghToken}},
		{"github fine-grained", "GITHUB_TOKEN=" + ghPAT, []string{"github_token=" + ghPAT}},
		{"github too short", notGHShort, nil},
		{"github glued", "x" + ghToken, nil},
		{"github wrong kind", "ghx_" + strings.Repeat("aB3", 12), nil},

		// Slack
		{"slack bot", "SLACK=" + slackToken, []string{"slack_token=" + slackToken}},
		{"slack user", "xoxp-1234567890-abcdef", []string{"slack_token=xoxp-1234567890-abcdef"}},
		{"slack short", "xoxb-12345", nil},
		{"slack no digit", "xoxb-abcdefghijklmnop", nil},
		{"slack unknown kind", "xoxz-123456789012-123456", nil},

		// API keys
		{"openai project", "OPENAI_API_KEY=" + openAIKey, []string{"api_key=" + openAIKey}},
		{"anthropic", `"` + anthropic + `"`, []string{"api_key=" + anthropic}},
		{"stripe secret", stripeKey, []string{"api_key=" + stripeKey}},
		{"stripe restricted", stripeRKey, []string{"api_key=" + stripeRKey}},
		{"stripe test key", stripeTest, nil},
		{"google", "key=" + googleKey + "&q=1", []string{"api_key=" + googleKey}},
		{"google 34", notGoogle34 + "!", nil},
		{"sk- in a word", "task-abcdefghijklmnopqrstuvwxyz0123", nil},
		{"sk- kebab name", "sk-this-is-not-a-real-key-name", nil},
		{"sk- short", "sk-abc123", nil},

		// JWT
		{"jwt", "Authorization: Bearer " + jwtExample, []string{"jwt=" + jwtExample}},
		{"jwt end of sentence", "token " + jwtExample + ".", []string{"jwt=" + jwtExample}},
		{"jwt unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0.", []string{"jwt=eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0In0."}},
		{"jwt header only", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", nil},
		{"jwt payload not json", "eyJhbGciOiJIUzI1NiJ9.abcdefghijklmnop.sig", nil},

		// Payment cards
		{"visa spaced", "card: 4111 1111 1111 1111", []string{"payment_card=4111 1111 1111 1111"}},
		{"mastercard dashed", "5500-0000-0000-0004 exp 12/29", []string{"payment_card=5500-0000-0000-0004"}},
		{"amex compact", "amex 378282246310005.", []string{"payment_card=378282246310005"}},
		{"amex 4-6-5", "3782 822463 10005", []string{"payment_card=3782 822463 10005"}},
		{"visa compact in json", `{"pan":"4012888888881881"}`, []string{"payment_card=4012888888881881"}},
		{"discover", "6011111111111117", []string{"payment_card=6011111111111117"}},
		{"jcb", "3530111333300000", []string{"payment_card=3530111333300000"}},
		{"diners 14", "30569309025904", []string{"payment_card=30569309025904"}},
		{"unionpay", "6200000000000005", []string{"payment_card=6200000000000005"}},
		{"mastercard 2-series", "2223000048400011", []string{"payment_card=2223000048400011"}},
		{"card then cvv", "4111 1111 1111 1111 123", []string{"payment_card=4111 1111 1111 1111"}},
		{"visa one digit changed", "4111 1111 1111 1112", nil},
		{"mastercard one digit changed", "5500-0000-0000-0005", nil},
		{"amex one digit changed", "378282246310006", nil},
		{"random 16 digits failing luhn", "4929381332664219", nil},
		{"luhn-valid, unknown issuer", "1234567812345670", nil},
		{"luhn-valid, wrong length for visa", "41111111111111", nil},
		{"mixed separators", "4111 1111-1111 1111", nil},
		{"glued to letters", "ID4111111111111111", nil},
		{"inside a longer number", "94111111111111111", nil},
		{"decimal", "0.4111111111111111", nil},
		{"phone", "call +1 415-555-2671 or (415) 555-2671", nil},
		{"timestamp", "2024-05-01T12:34:56.789Z at 1714567890123", nil},
		{"order id", "order ORD-2024-000123-77 shipped", nil},
		{"digits with single spaces", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", nil},

		// SSN
		{"ssn integration value", "SSN: 512-44-8392.", []string{"us_ssn=512-44-8392"}},
		{"ssn spaces", "ssn 512 44 8392", []string{"us_ssn=512 44 8392"}},
		{"ssn common example", "123-45-6789", []string{"us_ssn=123-45-6789"}},
		{"ssn in json", `{"ssn":"078-12-3456"}`, []string{"us_ssn=078-12-3456"}},
		{"ssn area 000", "000-12-3456", nil},
		{"ssn area 666", "666-12-3456", nil},
		{"ssn area 9xx", "912-34-5678", nil},
		{"ssn area 999", "999-34-5678", nil},
		{"ssn group 00", "123-00-4567", nil},
		{"ssn serial 0000", "123-45-0000", nil},
		{"ssn woolworth", "078-05-1120", nil},
		{"ssn advertising", "219-09-9999", nil},
		{"ssn inside longer number before", "1512-44-8392", nil},
		{"ssn inside longer number after", "512-44-83921", nil},
		{"ssn phone-like", "tel 1-512-44-8392", nil},
		{"ssn no separators", "512448392", nil},
		{"ssn mixed separators", "512-44 8392", nil},
		{"ssn glued to letters", "A512-44-8392", nil},
		{"ssn date-like", "2024-05-01", nil},

		// IBAN
		{"iban gb grouped", "pay to GB82 WEST 1234 5698 7654 32 today", []string{"iban=GB82 WEST 1234 5698 7654 32"}},
		{"iban de compact", "IBAN: DE89370400440532013000.", []string{"iban=DE89370400440532013000"}},
		{"iban gb compact", "GB82WEST12345698765432", []string{"iban=GB82WEST12345698765432"}},
		{"iban fr", "FR1420041010050500013M02606", []string{"iban=FR1420041010050500013M02606"}},
		{"iban nl grouped", "NL91 ABNA 0417 1643 00", []string{"iban=NL91 ABNA 0417 1643 00"}},
		{"iban bad check digits", "GB83 WEST 1234 5698 7654 32", nil},
		{"iban de one digit changed", "DE89370400440532013001", nil},
		{"iban too short", "DE8937040044053201300", nil},
		{"iban too long", "DE893704004405320130001", nil},
		{"iban unknown country", "ZZ89370400440532013000", nil},
		{"iban glued", "XDE89370400440532013000", nil},
		{"iban lower case", "de89370400440532013000", nil},

		// Email
		{"email", "mail alice@example.com now", []string{"email=alice@example.com"}},
		{"email subaddress, sentence end", "Contact: bob.smith+tag@mail.example.co.uk.", []string{"email=bob.smith+tag@mail.example.co.uk"}},
		{"email mailto", "mailto:carol@example.org", []string{"email=carol@example.org"}},
		{"email in angle brackets", "Dan <dan_o'neil@example.io>", []string{"email=neil@example.io"}},
		{"email no tld", "user@localhost", nil},
		{"email scp remote", "git clone git@github.com:mcpcage/mcpcage.git", nil},
		{"email retina image", "icon@2x.png logo@1.5x.svg", nil},
		{"email package version", "lodash@4.17.21", nil},
		{"email url userinfo", "https://user@host.example.com/path", nil},
		{"email double dot", "a..b@example.com", nil},
		{"email trailing dot local", "a.@example.com", nil},
		{"email no local", "@example.com", nil},
		{"email decorator", "@Component({selector: 'x'})", nil},
		{"email numeric tld", "a@example.123", nil},

		// Mixed
		{"several", "ssn 512-44-8392, card 4111111111111111, mail a@b.co",
			[]string{"us_ssn=512-44-8392", "payment_card=4111111111111111", "email=a@b.co"}},
		{"empty", "", nil},
		{"plain json", `{"files":["main.go","go.mod"],"count":2,"sha":"e83c5163316f89bfbde7d9ab23ca2e25604af290"}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := values(tt.text, set.Scan(tt.text))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Scan(%q)\n got %q\nwant %q", tt.text, got, tt.want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		b       []Detector
		c       []Custom
		wantErr string // substring; "" = no error
		want    []Detector
	}{
		{"all", nil, nil, "", Builtins()},
		{"none", []Detector{}, nil, "", nil},
		{"some, in builtin order, deduplicated", []Detector{Email, USSSN, Email}, nil, "", []Detector{USSSN, Email}},
		{"unknown builtin", []Detector{"passport"}, nil, `unknown detector "passport" (the built-ins are aws_access_key, private_key`, nil},
		{"custom", []Detector{}, []Custom{{"ticket", `TICKET-[0-9]{4,}`}}, "", []Detector{"custom:ticket"}},
		{"custom bad name", nil, []Custom{{"Bad-Name", `x`}}, "name must be", nil},
		{"custom long name", nil, []Custom{{strings.Repeat("a", 41), `x`}}, "name must be", nil},
		{"custom empty name", nil, []Custom{{"", `x`}}, "name must be", nil},
		{"custom builtin name", nil, []Custom{{"email", `x`}}, "built-in", nil},
		{"custom twice", nil, []Custom{{"a", `x`}, {"a", `y`}}, "defined twice", nil},
		{"custom bad regexp", nil, []Custom{{"a", `(`}}, "not a valid RE2", nil},
		{"custom backreference", nil, []Custom{{"a", `(a)\1`}}, "not a valid RE2", nil},
		{"custom empty pattern", nil, []Custom{{"a", ``}}, "empty string", nil},
		{"custom star", nil, []Custom{{"a", `a*`}}, "empty string", nil},
		{"custom optional", nil, []Custom{{"a", `(foo)?`}}, "empty string", nil},
		{"custom word boundary", nil, []Custom{{"a", `\b`}}, "empty string", nil},
		{"custom line start", nil, []Custom{{"a", `(?m)^`}}, "empty string", nil},
		{"custom alternation with empty", nil, []Custom{{"a", `foo|`}}, "empty string", nil},
		{"custom repeat zero", nil, []Custom{{"a", `x{0,3}`}}, "empty string", nil},
		{"custom anchored ok", []Detector{}, []Custom{{"a", `^\bfoo\b$`}}, "", []Detector{"custom:a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.b, tt.c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("New: err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Detectors(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Detectors() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScanCustomAndOverlap(t *testing.T) {
	tests := []struct {
		name   string
		b      []Detector
		custom []Custom
		text   string
		want   []string
	}{
		{"custom", []Detector{}, []Custom{{"ticket", `TICKET-[0-9]{4,}`}}, "see TICKET-1234 and TICKET-99",
			[]string{"custom:ticket=TICKET-1234"}},
		{"custom and builtin", nil, []Custom{{"ticket", `TICKET-[0-9]{4,}`}}, "TICKET-1234 by a@example.com",
			[]string{"custom:ticket=TICKET-1234", "email=a@example.com"}},
		{"earlier wins", nil, []Custom{{"contact", `contact [a-z]+`}}, "contact alice@example.com",
			[]string{"custom:contact=contact alice"}},
		{"same start, longer wins", nil, []Custom{{"user", `alice`}}, "alice@example.com",
			[]string{"email=alice@example.com"}},
		{"same span, builtin first", nil, []Custom{{"mail", `[a-z]+@example\.com`}}, "alice@example.com",
			[]string{"email=alice@example.com"}},
		{"only selected builtins", []Detector{USSSN}, nil, "512-44-8392 a@example.com 4111111111111111",
			[]string{"us_ssn=512-44-8392"}},
		{"custom can match the placeholder text", []Detector{}, []Custom{{"word", `redacted`}}, "redacted",
			[]string{"custom:word=redacted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustNew(t, tt.b, tt.custom)
			if got := values(tt.text, s.Scan(tt.text)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScanBounds(t *testing.T) {
	set := mustNew(t, nil, nil)
	t.Run("max findings", func(t *testing.T) {
		text := strings.Repeat("512-44-8392 ", MaxFindings+50)
		fs := set.Scan(text)
		if len(fs) != MaxFindings {
			t.Fatalf("%d findings, want %d", len(fs), MaxFindings)
		}
	})
	t.Run("max scan", func(t *testing.T) {
		text := strings.Repeat(" ", MaxScan-5) + "512-44-8392"
		if fs := set.Scan(text); len(fs) != 0 {
			t.Fatalf("found %v past MaxScan", fs)
		}
		text = strings.Repeat(" ", MaxScan-20) + "512-44-8392"
		if fs := set.Scan(text); len(fs) != 1 {
			t.Fatalf("found %v, want the SSN before MaxScan", fs)
		}
	})
	t.Run("nil set", func(t *testing.T) {
		var s *Set
		if fs := s.Scan("512-44-8392"); fs != nil {
			t.Fatal(fs)
		}
	})
}

func TestRedact(t *testing.T) {
	set := mustNew(t, nil, nil)
	tests := []struct {
		name string
		text string
		fs   []Finding // nil: set.Scan(text)
		want string
	}{
		{"scan", "card 4111 1111 1111 1111, ssn 512-44-8392!", nil, "card [redacted:payment_card], ssn [redacted:us_ssn]!"},
		{"whole", "a@example.com", nil, "[redacted:email]"},
		{"none", "nothing here", nil, "nothing here"},
		{"unsorted", "abcdef", []Finding{{"y", 4, 5}, {"x", 0, 2}}, "[redacted:x]cd[redacted:y]f"},
		{"overlapping merged", "abcdef", []Finding{{"x", 1, 3}, {"y", 2, 5}}, "a[redacted:x]f"},
		{"nested", "abcdef", []Finding{{"x", 1, 5}, {"y", 2, 3}}, "a[redacted:x]f"},
		{"out of range clipped", "abc", []Finding{{"x", -3, 1}, {"y", 2, 99}}, "[redacted:x]b[redacted:y]"},
		{"empty and inverted ignored", "abc", []Finding{{"x", 1, 1}, {"y", 2, 1}}, "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := tt.fs
			if fs == nil {
				fs = set.Scan(tt.text)
			}
			if got := Redact(tt.text, fs); got != tt.want {
				t.Errorf("Redact = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	set := mustNew(t, nil, nil)
	text := "512-44-8392 and 123-45-6789, 4111111111111111, a@example.com"
	want := map[Detector]int{USSSN: 2, PaymentCard: 1, Email: 1}
	if got := Counts(set.Scan(text)); !reflect.DeepEqual(got, want) {
		t.Errorf("Counts = %v, want %v", got, want)
	}
	if got := Counts(nil); got != nil {
		t.Errorf("Counts(nil) = %v, want nil", got)
	}
}

func TestBuiltins(t *testing.T) {
	b := Builtins()
	if len(b) != 10 || b[0] != AWSAccessKey || b[9] != Email {
		t.Fatalf("Builtins() = %q", b)
	}
	b[0] = "changed"
	if Builtins()[0] != AWSAccessKey {
		t.Fatal("Builtins returns shared storage")
	}
	for _, d := range Builtins() {
		if scanners[d] == nil && d != PaymentCard && d != USSSN && d != IBAN {
			t.Errorf("no scanner for %s", d)
		}
	}
}

// TestLinear guards against quadratic scanners: texts made of a
// detector's anchor repeated must scan quickly.
func TestLinear(t *testing.T) {
	set := mustNew(t, nil, []Custom{{"x", `(a|b)+c`}})
	for _, unit := range []string{"AKIA", "IA", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN ", "-----END ", "ghp_", "gh", "github_pat_",
		"xoxb-", "sk-", "sk_live_", "AIza", "eyJ", "eyJa.", "4111 ", "1-", "1 ", "512-44-", "DE89", "GB82 ", "a@", "@a.", ".", "a/", "=", "ab"} {
		text := strings.Repeat(unit, MaxScan/len(unit)+1)
		fs := set.Scan(text)
		if len(fs) > MaxFindings {
			t.Fatalf("%q: %d findings", unit, len(fs))
		}
		Tokens(text)
	}
}
