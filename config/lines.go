package config

import (
	"bufio"
	"bytes"
	"strings"
)

// lineOf finds the line where key is defined in a TOML document: the
// assignment of its last component under the right table, or the table
// header itself. It understands [table] and [[array]] headers, dotted keys
// and quoted keys, which covers how configurations are written; it returns
// 0 when it cannot tell.
func lineOf(data []byte, key []string) int {
	if len(key) == 0 {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var table []string
	best := 0
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(stripComment(sc.Text()))
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			inner := strings.Trim(line, "[]")
			table = splitKey(inner)
			if equalKey(table, key) {
				return n
			}
			if best == 0 && hasPrefix(key, table) && len(table) > 0 && len(table) < len(key) {
				best = n // the table that holds the key, in case no assignment matches
			}
			continue
		}
		eq := strings.IndexByte(line, '=')
		if eq < 0 {
			continue
		}
		full := append(append([]string{}, table...), splitKey(line[:eq])...)
		if hasPrefix(key, full) {
			return n // the key itself, or an inline table/array that holds it
		}
	}
	return best
}

func stripComment(s string) string {
	inStr := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inStr != 0:
			if c == '\\' && inStr == '"' {
				i++
			} else if c == inStr {
				inStr = 0
			}
		case c == '"' || c == '\'':
			inStr = c
		case c == '#':
			return s[:i]
		}
	}
	return s
}

func splitKey(s string) []string {
	var parts []string
	var cur strings.Builder
	inStr := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inStr != 0:
			if c == inStr {
				inStr = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			inStr = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

func hasPrefix(key, prefix []string) bool {
	if len(prefix) > len(key) {
		return false
	}
	for i := range prefix {
		if key[i] != prefix[i] {
			return false
		}
	}
	return true
}

func equalKey(a, b []string) bool { return len(a) == len(b) && hasPrefix(a, b) }
