package identity

import "slices"

// Rule is one [agents.NAME] entry of the configuration.
type Rule struct {
	Name   string
	Exe    []string // resolved executable paths
	SHA256 []string // optional: allowed digests
	UIDs   []uint32 // optional: allowed uids
}

// Name returns the agent's name: the first rule it matches, else
// "exe:" + its executable path.
func Name(p Process, rules []Rule) string {
	for _, r := range rules {
		if !slices.Contains(r.Exe, p.Exe) {
			continue
		}
		if len(r.SHA256) > 0 && !slices.Contains(r.SHA256, p.SHA256) {
			continue
		}
		if len(r.UIDs) > 0 && !slices.Contains(r.UIDs, p.UID) {
			continue
		}
		return r.Name
	}
	return "exe:" + p.Exe
}
