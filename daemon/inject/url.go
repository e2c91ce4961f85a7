package inject

import (
	"net/url"
	"strings"
)

// unescape decodes %XX (not '+'); a bad escape leaves v as it is.
func unescape(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// maxURL bounds the length of a URL the rule reads.
const maxURL = 4096

// scanURLs finds ExfiltrationURL: http(s) URLs in the original text.
func (s *scanner) scanURLs() {
	text := s.text
	for off := 0; off < len(text); {
		k := strings.Index(text[off:], "://")
		if k < 0 {
			return
		}
		k += off
		off = k + 3
		var start int
		switch {
		case k >= 5 && strings.EqualFold(text[k-5:k], "https"):
			start = k - 5
		case k >= 4 && strings.EqualFold(text[k-4:k], "http"):
			start = k - 4
		default:
			continue
		}
		if start > 0 && isASCIIAlnum(text[start-1]) {
			continue
		}
		end := urlEnd(text, k+3)
		if end <= k+3 {
			continue
		}
		off = end
		if exfilURL(text[k+3:end], isImage(text, start)) {
			s.add(ExfiltrationURL, start, end)
		}
	}
}

func isASCIIAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// urlEnd: where the URL starting at text[p:] (after "://") ends: at white
// space, a quote, a non-ASCII byte, an unbalanced ')' or ']', or maxURL;
// trailing punctuation is not part of it.
func urlEnd(text string, p int) int {
	paren, bracket := 0, 0
	i := p
	for ; i < len(text) && i-p < maxURL; i++ {
		c := text[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\'' || c == '`' || c == '\\' {
			break
		}
		if c == '(' {
			paren++
		} else if c == ')' {
			if paren == 0 {
				break
			}
			paren--
		} else if c == '[' {
			bracket++
		} else if c == ']' {
			if bracket == 0 {
				break
			}
			bracket--
		}
	}
	for i > p && strings.IndexByte(".,;:!?*", text[i-1]) >= 0 {
		i--
	}
	return i
}

// isImage reports whether the URL at text[start:] is the target of a
// markdown image (![alt](url)) or of an HTML <img>: a client fetches
// those without anyone clicking.
func isImage(text string, start int) bool {
	before := text[max(0, start-512):start]
	if strings.HasSuffix(before, "](") || strings.HasSuffix(before, "]( ") || strings.HasSuffix(before, "]: ") {
		line := before
		if nl := strings.LastIndexByte(line, '\n'); nl >= 0 {
			line = line[nl+1:]
		}
		if strings.Contains(line, "![") {
			return true
		}
	}
	if tag := lastIndexFold(before, "<img"); tag >= 0 && !strings.ContainsRune(before[tag:], '>') {
		return true
	}
	return false
}

func lastIndexFold(s, sub string) int {
	for i := len(s); i > 0; {
		k := strings.LastIndexByte(s[:i], sub[0])
		if k < 0 {
			return -1
		}
		if k+len(sub) <= len(s) && strings.EqualFold(s[k:k+len(sub)], sub) {
			return k
		}
		i = k
	}
	return -1
}

// exfilURL judges a URL (without its scheme): whether its query carries
// data, or, for an image, any part of it.
func exfilURL(u string, image bool) bool {
	if h := strings.IndexByte(u, '#'); h >= 0 {
		u = u[:h] // the fragment does not leave the client
	}
	rest, query, _ := strings.Cut(u, "?")
	host, path := rest, ""
	if sl := strings.IndexByte(rest, '/'); sl >= 0 {
		host, path = rest[:sl], rest[sl:]
	}
	if image && hasPlaceholder(host+path, false) {
		return true
	}
	if hasPlaceholder(path, true) {
		return true
	}
	if query == "" {
		return false
	}
	if hasPlaceholder(query, false) {
		return true
	}
	badge := badgeHosts[strings.ToLower(host)]
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		name, value, hasEq := strings.Cut(kv, "=")
		if !hasEq {
			name, value = "", kv
		}
		name = strings.ToLower(name)
		if len(value) >= minParamValue && !badge && sensitiveParam(name) {
			return true
		}
		if len(value) >= 32 && !benignParam(name) && encodedLike(unescape(value)) {
			return true
		}
	}
	return false
}

// hasPlaceholder reports a template placeholder in s: {x}, {{x}}, ${X},
// $X, <x>, and their percent-encoded braces. With onlySensitive, only
// placeholders whose name looks like private data count: REST paths such
// as /users/{id} are common in documentation.
func hasPlaceholder(s string, onlySensitive bool) bool {
	for i := 0; i < len(s); i++ {
		var name string
		var n int
		switch c := s[i]; {
		case c == '{':
			name, n = enclosed(s[i+1:], "}")
		case c == '<':
			name, n = enclosed(s[i+1:], ">")
		case c == '$' && i+1 < len(s) && s[i+1] != '{':
			j := i + 1
			for j < len(s) && (isASCIIAlnum(s[j]) || s[j] == '_') {
				j++
			}
			if j-i >= 3 && !('0' <= s[i+1] && s[i+1] <= '9') {
				name, n = s[i+1:j], j-i-1
			}
		case c == '%' && i+2 < len(s):
			switch strings.ToLower(s[i+1 : i+3]) {
			case "7b":
				name, n = enclosed(s[i+3:], "%7d", "%7D")
			case "3c":
				name, n = enclosed(s[i+3:], "%3e", "%3E")
			}
		}
		if name == "" {
			continue
		}
		if !onlySensitive || sensitiveName(name) {
			return true
		}
		i += n
	}
	return false
}

// enclosed returns the name up to the first closing delimiter, if it is a
// plausible placeholder name (1..64 bytes of letters, digits, _ - . : |
// space, braces for {{x}} and ${x}).
func enclosed(s string, closers ...string) (string, int) {
	end := -1
	for _, c := range closers {
		if k := strings.Index(s, c); k >= 0 && (end < 0 || k < end) {
			end = k
		}
	}
	if end <= 0 || end > 64 {
		return "", 0
	}
	name := strings.Trim(s[:end], "{$ ")
	letter := false
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isASCIIAlnum(c) && strings.IndexByte("_-.:| {}", c) < 0 {
			return "", 0
		}
		letter = letter || 'a' <= c|0x20 && c|0x20 <= 'z'
	}
	if !letter || htmlTags[strings.ToLower(name)] {
		return "", 0 // {{.}}, <br>
	}
	return name, end
}

// htmlTags are not placeholders: "?id=42<br>" is a URL in HTML.
var htmlTags = map[string]bool{"br": true, "p": true, "a": true, "b": true, "i": true, "u": true, "s": true, "em": true,
	"strong": true, "span": true, "div": true, "code": true, "pre": true, "li": true, "ul": true, "ol": true, "td": true,
	"tr": true, "th": true, "hr": true, "sup": true, "sub": true, "tt": true, "small": true, "big": true, "font": true,
	"wbr": true, "nobr": true}

var sensitiveTokens = map[string]bool{
	"conversation": true, "conversations": true, "convo": true, "history": true, "chat": true, "chats": true,
	"secret": true, "secrets": true, "password": true, "passwords": true, "passwd": true, "pwd": true,
	"credential": true, "credentials": true, "creds": true, "token": true, "tokens": true, "apikey": true,
	"ssn": true, "ssh": true, "cookie": true, "cookies": true, "memory": true, "prompt": true, "env": true,
	"sidenote": true, "summary": true, "context": true,
}

// sensitiveName: a placeholder name that looks like private data.
func sensitiveName(name string) bool {
	low := strings.ToLower(name)
	for _, sub := range []string{"conversation", "history", "secret", "password", "passwd", "credential", "sidenote", "apikey", "api_key", "id_rsa"} {
		if strings.Contains(low, sub) {
			return true
		}
	}
	for _, t := range strings.FieldsFunc(low, func(r rune) bool { return !('a' <= r && r <= 'z' || '0' <= r && r <= '9') }) {
		if sensitiveTokens[t] {
			return true
		}
	}
	return false
}

// minParamValue: a parameter named like a secret counts from this length
// on; "?key=value" in documentation and tests carries nothing.
const minParamValue = 8

// badgeHosts serve README badges whose URLs carry a public token
// (codecov's ?token=...): no attacker reads their logs.
var badgeHosts = map[string]bool{"codecov.io": true, "app.codecov.io": true, "img.shields.io": true, "badge.fury.io": true,
	"travis-ci.org": true, "travis-ci.com": true, "api.travis-ci.com": true, "api.travis-ci.org": true, "circleci.com": true,
	"dl.circleci.com": true, "coveralls.io": true, "goreportcard.com": true, "sonarcloud.io": true, "app.codacy.com": true,
	"api.codacy.com": true, "api.netlify.com": true, "deepsource.io": true, "app.deepsource.com": true}

var sensitiveParams = map[string]bool{
	"data": true, "secret": true, "secrets": true, "client_secret": true, "token": true, "access_token": true,
	"auth_token": true, "api_token": true, "id_token": true, "refresh_token": true, "bearer": true,
	"key": true, "api_key": true, "apikey": true, "secret_key": true, "private_key": true, "ssh_key": true,
	"ssn": true, "conversation": true, "conv": true, "convo": true, "history": true, "chat": true,
	"chat_history": true, "conversation_history": true, "password": true, "passwd": true, "pwd": true,
	"credentials": true, "creds": true, "cookie": true, "cookies": true, "exfil": true, "leak": true,
	"dump": true, "payload": true, "env": true,
}

// sensitiveParam: a query parameter named like data or a secret.
func sensitiveParam(name string) bool {
	return sensitiveParams[strings.ReplaceAll(name, "-", "_")]
}

// benignParam: parameters that carry long hex or base64 values in
// ordinary URLs: signatures of pre-signed links, commit hashes, ids,
// OAuth state and codes, cache busters.
func benignParam(name string) bool {
	if strings.HasPrefix(name, "x-amz-") || strings.HasPrefix(name, "x-goog-") {
		return true
	}
	switch name {
	case "sig", "signature", "sha", "sha1", "sha256", "hash", "digest", "checksum", "etag", "integrity",
		"nonce", "state", "code", "code_challenge", "ref", "commit", "rev", "revision", "oid", "id", "uid", "uuid", "guid",
		"v", "ver", "version", "list", "t", "ts", "_", "cb", "se", "sp", "sv", "sr", "st", "skoid", "sktid", "policy",
		"key-pair-id", "expires", "continuation", "cursor", "page_token", "pagetoken", "next_page_token", "pagination_token", "after", "before":
		return true
	}
	return strings.HasSuffix(name, "_id") || strings.HasSuffix(name, "id")
}

// encodedLike: a value of base64 or hex characters that looks like
// encoded bytes: at least 32 of them, hex with letters and digits, or
// base64 with upper case, lower case and digits changing class at least
// every other character (random base64 does so about two times in three,
// CamelCase words and paths far less). UUIDs, words and paths do not
// qualify.
func encodedLike(v string) bool {
	if len(v) < 32 {
		return false
	}
	var upper, lower, digit, hexLetters, other, switches int
	prev := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		class := 0
		switch {
		case 'A' <= c && c <= 'Z':
			upper++
			if c <= 'F' {
				hexLetters++
			}
			class = 1
		case 'a' <= c && c <= 'z':
			lower++
			if c <= 'f' {
				hexLetters++
			}
			class = 2
		case '0' <= c && c <= '9':
			digit++
			class = 3
		case c == '+' || c == '/' || c == '=' || c == '_' || c == '-' || c == '.':
			other++
		default:
			return false
		}
		if class != 0 {
			if prev != 0 && class != prev {
				switches++
			}
			prev = class
		}
	}
	if digit > 0 && hexLetters > 0 && hexLetters == upper+lower && other == 0 && (upper == 0 || lower == 0) {
		// hex; but MD5, SHA-1 and SHA-256 digests (key fingerprints,
		// commit and content hashes) name things rather than carry them
		return len(v) != 32 && len(v) != 40 && len(v) != 64
	}
	alnum := upper + lower + digit
	return upper > 0 && lower > 0 && digit > 0 && alnum >= 32 && 2*switches >= alnum
}
