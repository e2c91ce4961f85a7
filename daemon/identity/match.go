package identity

import "slices"

// Rule is one [agents.NAME] entry of the configuration.
type Rule struct {
	Name   string
	Exe    []string // resolved executable paths
	SHA256 []string // optional: allowed digests
	UIDs   []uint32 // optional: allowed uids
	// Script: resolved script paths; when set, the agent must be an
	// interpreter running one of them (ScriptSHA256: with these digests).
	Script       []string
	ScriptSHA256 []string
}

// Name returns the agent's name: the first rule it matches; else, for an
// interpreter whose script was identified, "script:" + the script's path;
// else "exe:" + its executable path (for an interpreter: any script).
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
		if len(r.Script) > 0 && (p.Script.Path == "" || !slices.Contains(r.Script, p.Script.Path)) {
			continue
		}
		if len(r.ScriptSHA256) > 0 && !slices.Contains(r.ScriptSHA256, p.Script.SHA256) {
			continue
		}
		return r.Name
	}
	if p.Interpreter && p.Script.Path != "" {
		return "script:" + p.Script.Path
	}
	return "exe:" + p.Exe
}

// AnyScript reports whether a grant to agent covers any script an
// interpreter runs: "exe:/path/to/interpreter", or a rule that names only
// interpreters and no script.
func AnyScript(agent string, rules []Rule) bool {
	if len(agent) > 4 && agent[:4] == "exe:" {
		return IsInterpreter(agent[4:])
	}
	for _, r := range rules {
		if r.Name != agent || len(r.Script) > 0 {
			continue
		}
		for _, e := range r.Exe {
			if IsInterpreter(e) {
				return true
			}
		}
	}
	return false
}
