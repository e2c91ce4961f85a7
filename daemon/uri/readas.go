package uri

import (
	"slices"
	"strings"
)

// specialSchemes are those whose URLs a WHATWG parser reads with '\' as
// '/'.
var specialSchemes = []string{"file", "http", "https", "ws", "wss", "ftp"}

// readAs is s as a WHATWG URL parser would serialize it, as far as the
// problems Check names go: ends stripped, tabs and line breaks removed,
// the scheme lower-cased, '\' read as '/' in a special scheme's path,
// dot segments resolved in a path that starts with '/'. It is what an
// error tells the client, never what mcpcage decides on.
func readAs(s string) string {
	s = strings.TrimFunc(s, func(r rune) bool { return r <= ' ' })
	s = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(s)
	n := schemeLen(s)
	scheme := strings.ToLower(s[:n])
	rest := s[n:]
	tail := ""
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		rest, tail = rest[:i], rest[i:]
	}
	if n > 0 && slices.Contains(specialSchemes, scheme) {
		rest = strings.ReplaceAll(rest, `\`, "/")
	}
	authority := ""
	if n > 0 {
		authority, rest = ":", rest[1:]
		if strings.HasPrefix(rest, "//") {
			end := strings.IndexByte(rest[2:], '/')
			if end < 0 {
				end = len(rest) - 2
			}
			authority, rest = "://"+rest[2:2+end], rest[2+end:]
		}
	}
	if strings.HasPrefix(rest, "/") {
		rest = resolveDots(rest)
	}
	return scheme + authority + rest + tail
}

// resolveDots removes the "." and ".." segments of path, which starts
// with '/', as a WHATWG URL parser does.
func resolveDots(path string) string {
	segs := strings.Split(path[1:], "/")
	out := make([]string, 0, len(segs))
	for i, seg := range segs {
		last := i == len(segs)-1
		switch dots := dotsOf(seg); {
		case dots == 2:
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		case dots == 1:
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, seg)
		}
	}
	return "/" + strings.Join(out, "/")
}

// dotsOf is 1 for a "." segment, 2 for a ".." one (each '.' or "%2e"),
// and 0 for any other.
func dotsOf(seg string) int {
	dots := 0
	for i := 0; i < len(seg); {
		if d, ok := escaped(seg[i:]); ok && d == '.' {
			i += 3
		} else if seg[i] == '.' {
			i++
		} else {
			return 0
		}
		dots++
	}
	if dots > 2 {
		return 0
	}
	return dots
}
