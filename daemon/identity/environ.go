package identity

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
)

// EnvName is a pattern of the variables the kernel keeps at exec: a
// prefix of "NAME=VALUE" ("LD_PRELOAD=" for that variable alone, "NODE_"
// for all of node's). Value: its value is read (PATH, NODE_OPTIONS);
// otherwise the kernel keeps the name and whether the value is empty.
type EnvName struct {
	Pattern string
	Value   bool
}

// valueRead are the variables whose values identity reads; of the rest
// it reads only whether they are set and not empty.
var valueRead = []string{"PATH", "NODE_OPTIONS"}

// EnvNames are the environment variables agent identity reads, as the
// kernel's exec stamper keeps them: every variable loaderInjected, a
// grammar's injected and its program check look at, so the kernel's copy
// from exec holds all they need. Those whose values are read come first
// (a variable counts under the first pattern it matches).
func EnvNames() []EnvName {
	names := append(slices.Clone(loader), compiledRunsOther...)
	for _, g := range interpreters {
		names = append(append(append(names, g.env...), g.envOwn...), g.envAllow...)
	}
	pattern := func(n string) string {
		if strings.HasSuffix(n, "_") {
			return n
		}
		return n + "="
	}
	var others []string
	for _, n := range names {
		if !slices.Contains(valueRead, n) {
			others = append(others, pattern(n))
		}
	}
	slices.Sort(others)
	others = slices.Compact(others)
	// A pattern under a shorter one ("NODE_ENV=" under "NODE_") adds
	// nothing.
	others = slices.DeleteFunc(others, func(p string) bool {
		return slices.ContainsFunc(others, func(q string) bool { return q != p && strings.HasPrefix(p, q) })
	})
	var out []EnvName
	for _, n := range valueRead {
		out = append(out, EnvName{Pattern: pattern(n), Value: true})
	}
	for _, p := range others {
		out = append(out, EnvName{Pattern: p})
	}
	return out
}

// notRecorded says why an agent older than the exec record has no
// environment identity can trust.
const notRecorded = "not recorded at exec: the agent started before mcpcaged began recording execs, and its memory, which /proc shows, may have been rewritten since (restart the MCP client)"

// agentEnviron returns the agent's environment as identity checks it.
// With an exec stamp (st), it is the kernel's copy of the variables of
// EnvNames, taken at exec: /proc/PID/environ shows the process's memory,
// which the process may have rewritten since (to hide an LD_PRELOAD once
// it has done its work), and which Chromium's setproctitle, in every
// Electron client, overwrites with its title. cut names the variables
// the kernel found too long to keep; unchecked says why the environment
// cannot be trusted ("" when it can): an agent with no stamp while the
// kernel records (stamping) is older than the record, and its
// environment is not checked at all. Without a kernel record (stamping
// false, a weaker mode status reports) /proc is read. A variable set
// twice leaves it unchecked too: programs differ in which they read
// (python's getenv the first, ld.so the last).
func agentEnviron(pid int, st *Stamp, stamping bool) (env []byte, cut []string, unchecked string, err error) {
	switch {
	case st != nil:
		env, cut, unchecked = st.Env, st.EnvCut, st.EnvUnchecked
	case stamping:
		return nil, nil, notRecorded, nil
	default:
		env, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			return nil, nil, "", fmt.Errorf("read agent %d environment: %w", pid, ErrGone)
		}
	}
	if unchecked == "" {
		if k := setTwice(env, cut); k != "" {
			unchecked = "ambiguous: " + k + " is set more than once, and programs differ in which they read (start the client with each variable set once)"
		}
	}
	return env, cut, unchecked, nil
}

// setTwice returns a variable of env ("NAME=VALUE", NUL-separated) or cut
// (names) that appears more than once.
func setTwice(env []byte, cut []string) string {
	seen := map[string]bool{}
	for _, kv := range bytes.Split(env, []byte{0}) {
		if len(kv) == 0 {
			continue
		}
		k, _, _ := strings.Cut(string(kv), "=")
		if seen[k] {
			return k
		}
		seen[k] = true
	}
	for _, k := range cut {
		if seen[k] {
			return k
		}
		seen[k] = true
	}
	return ""
}

// compiledCut returns a variable of cut (too long for the kernel to
// keep) that loaderInjected would look at.
func compiledCut(cut []string) string {
	for _, k := range cut {
		if slices.Contains(loader, k) || slices.Contains(compiledRunsOther, k) || k == "NODE_OPTIONS" {
			return k
		}
	}
	return ""
}

// cutChecked returns a variable of cut that g's injected would look at.
func (g *grammar) cutChecked(cut []string) string {
	for _, k := range cut {
		if slices.Contains(loader, k) || matches(g.env, k) || matches(g.envOwn, k) {
			return k
		}
	}
	return ""
}

// tooLong says that a variable was too long for the kernel to keep.
func tooLong(k string) string {
	return "environment variable " + k + " was over 510 bytes at exec, too long to check"
}
