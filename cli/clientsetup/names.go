package clientsetup

import (
	"fmt"
	"regexp"
	"strings"
)

// maxServerName is the longest server name mcpcaged accepts.
const maxServerName = 63

var nameRe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ServerName makes an mcpcage server name for a client entry: the
// client's name, then the entry's with what a server name cannot hold
// replaced by '-', cut at 63 bytes. Different entries can make the same
// name ("a b" and "a-b"); Rewrite makes them unique.
func ServerName(client, entry string) string {
	n := strings.Trim(nameRe.ReplaceAllString(entry, "-"), "-.")
	if n == "" {
		n = "server"
	}
	n = client + "-" + n
	if len(n) > maxServerName {
		n = n[:maxServerName]
	}
	return n
}

// maxSuffix bounds the search for a free name.
const maxSuffix = 1000

// serverNames names every entry of a client's file (in the file's
// order): its base name, or when an earlier entry has that name or
// inUse says it is taken, the name with -2, -3... (cut to fit in 63
// bytes). The same file and the same names in use give the same names.
// Every entry gets one, imported or not, so leaving an entry out (the
// daemon refused its image) does not rename the others.
func serverNames(entries []entryRef, inUse func(string) bool) ([]string, error) {
	names := make([]string, len(entries))
	given := map[string]bool{}
	for i, e := range entries {
		n := e.base
		for j := 2; given[n] || (inUse != nil && inUse(n)); j++ {
			if j > maxSuffix {
				return nil, fmt.Errorf("no free server name for %q: %s and %s-2 to -%d are all in use; nothing was changed", e.label, e.base, e.base, maxSuffix)
			}
			suffix := fmt.Sprintf("-%d", j)
			n = e.base[:min(len(e.base), maxServerName-len(suffix))] + suffix
		}
		given[n] = true
		names[i] = n
	}
	return names, nil
}
