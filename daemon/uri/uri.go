// Package uri checks that a resource URI is in normal form: spelled so
// that the resource a server serves for it is the one its text names.
//
// mcpcage decides a resource request by the URI's text (a consent's
// pattern is matched against it), while the TypeScript SDK (new URL(uri))
// and the Python SDK (pydantic's AnyUrl) hand the server the URI as a
// WHATWG URL parser serializes it: file:///work/../etc/secret.txt is
// served as file:///etc/secret.txt, which a consent for file:///work/*
// was never meant to cover. Rather than parse URIs as those parsers do,
// [Check] refuses every URI they would change in a way that can move it
// from under one path to another:
//
//   - a space or control character at its start or end (stripped);
//   - a tab, line feed or carriage return anywhere (removed), or any
//     other control character (escaped: no resource is named so);
//   - a backslash anywhere (a '/' to the parsers in file, http, https,
//     ws, wss and ftp URIs);
//   - a scheme with upper-case letters (lower-cased);
//   - an http, https, ws, wss or ftp URI whose host does not follow
//     exactly two slashes: the parsers take the first name after any
//     slashes for the host ("https:///docs/x" is host docs);
//   - a "." or ".." segment before the query and fragment (resolved
//     away), spelled with '.' or "%2e" in either case ("%2e%2E", ".%2e").
//     Segments end at '/', and at "%2f" and "%5c" too: a server that
//     decodes the path before it opens a file (Python's url2pathname)
//     would see a separator there.
//
// A URI that passes may still differ from what the parsers serialize (a
// space is escaped, a host lower-cased, a default port dropped), but not
// in which segments its path has. A ".." that is not a path segment (in
// the query, or inside a name such as "a..b") passes.
package uri

import (
	"fmt"
	"strings"
	"unicode"
)

// Check reports why the resource URI s is not in normal form (nil when it
// is), and what a server's SDK would read instead when that is known.
func Check(s string) error {
	problem := problemOf(s)
	if problem == "" {
		return nil
	}
	msg := fmt.Sprintf("resource URI %q is not in normal form: %s", s, problem)
	if n := readAs(s); n != s {
		msg += fmt.Sprintf("; a server's SDK would read it as %q", n)
	}
	return fmt.Errorf("%s; send the normalized URI", msg)
}

// problemOf names the first problem of s, "" when it has none. It does
// not allocate: it runs for every resource request.
func problemOf(s string) string {
	if s != "" && (strippedByte(s[0]) || strippedByte(s[len(s)-1])) {
		return "it begins or ends with a space or control character, which a server's SDK strips"
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\t' || c == '\n' || c == '\r':
			return "it holds a tab or line break, which a server's SDK removes"
		case c < 0x20 || c == 0x7f:
			return "it holds a control character"
		case c == '\\':
			return "it holds a backslash, which a server's SDK reads as '/' in file and http(s) URIs"
		}
	}
	n := schemeLen(s)
	if strings.ContainsFunc(s[:n], unicode.IsUpper) {
		return "its scheme has upper-case letters, which a server's SDK lower-cases"
	}
	if special(s[:n]) && !hasAuthority(s[n+1:]) {
		return "its host does not follow exactly two slashes, as a server's SDK reads an http(s), ws(s) or ftp URI: it would take the first name after the slashes (or after the colon) for the host"
	}
	if hasDotSegment(pathOf(s, n)) {
		return `its path has a "." or ".." segment (or one spelled with %2e), which a server's SDK resolves`
	}
	return ""
}

// strippedByte reports whether a WHATWG URL parser strips c from the ends
// of a URL: a C0 control or a space.
func strippedByte(c byte) bool { return c <= ' ' }

// special reports whether scheme is one a WHATWG parser gives a host
// always, whatever the slashes after it (file aside: its host may be
// empty).
func special(scheme string) bool {
	switch scheme {
	case "http", "https", "ws", "wss", "ftp":
		return true
	}
	return false
}

// hasAuthority reports whether rest (what follows a special scheme's
// colon) is "//" and then a host: not "///...", "/x" or "x", which the
// parsers read as if the slashes were there, the first name after them
// taken for the host ("https:///docs/x" is https://docs/x).
func hasAuthority(rest string) bool {
	return len(rest) > 2 && rest[0] == '/' && rest[1] == '/' && rest[2] != '/' && rest[2] != '?' && rest[2] != '#'
}

// schemeLen is the length of s's scheme ("" when it has none), colon
// excluded: an ASCII letter, then letters, digits, '+', '-' or '.', then
// ':'.
func schemeLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return i
		default:
			return 0
		}
	}
	return 0
}

// pathOf is what follows the scheme (and its colon) of s, up to the query
// or fragment: the authority, if any, and the path.
func pathOf(s string, schemeLen int) string {
	if schemeLen > 0 {
		s = s[schemeLen+1:]
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	return s
}

// hasDotSegment reports whether path has a segment that is one or two
// dots, each '.' or "%2e"; segments end at '/', '\', "%2f" and "%5c".
func hasDotSegment(path string) bool {
	dots := 0 // in the current segment; -1 once it holds anything else
	for i := 0; ; {
		if i == len(path) {
			return dots == 1 || dots == 2
		}
		c, n := path[i], 1
		if d, ok := escaped(path[i:]); ok {
			c, n = d, 3
		}
		switch c {
		case '/', '\\':
			if dots == 1 || dots == 2 {
				return true
			}
			dots = 0
		case '.':
			if dots >= 0 {
				dots++
			}
		default:
			dots = -1
		}
		i += n
	}
}

// escaped decodes a "%2e", "%2f" or "%5c" (either case) at the start of
// s: the escapes that spell a dot or a separator.
func escaped(s string) (byte, bool) {
	if len(s) < 3 || s[0] != '%' {
		return 0, false
	}
	switch lower := s[2] | 0x20; {
	case s[1] == '2' && lower == 'e':
		return '.', true
	case s[1] == '2' && lower == 'f':
		return '/', true
	case s[1] == '5' && lower == 'c':
		return '\\', true
	}
	return 0, false
}
