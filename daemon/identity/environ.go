package identity

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// EnvNames are the environment variables agent identity reads, as the
// kernel's exec stamper keeps them: prefixes of "NAME=VALUE" strings
// ("LD_PRELOAD=" for that variable alone, "NODE_" for all of node's). It
// is every variable loaderInjected, a grammar's injected and its program
// check look at, so the kernel's copy from exec holds all they need.
func EnvNames() []string {
	names := append(append([]string{"PATH", "NODE_OPTIONS"}, loader...), compiledRunsOther...)
	for _, g := range interpreters {
		names = append(append(append(names, g.env...), g.envOwn...), g.envAllow...)
	}
	var patterns []string
	for _, n := range names {
		if !strings.HasSuffix(n, "_") {
			n += "="
		}
		patterns = append(patterns, n)
	}
	slices.Sort(patterns)
	patterns = slices.Compact(patterns)
	// A pattern under a shorter one ("NODE_OPTIONS=" under "NODE_") adds
	// nothing.
	return slices.DeleteFunc(patterns, func(p string) bool {
		return slices.ContainsFunc(patterns, func(q string) bool { return q != p && strings.HasPrefix(p, q) })
	})
}

// agentEnviron returns the agent's environment as identity checks it.
// With an exec stamp (st), it is the kernel's copy of the variables of
// EnvNames, taken at exec: /proc/PID/environ shows the process's memory,
// which the process may have rewritten since (to hide an LD_PRELOAD once
// it has done its work), and which Chromium's setproctitle, in every
// Electron client, overwrites with its title. cut names the variables
// the kernel found too long to keep; unchecked says why the copy cannot
// be trusted to be whole ("" when it can). Without a stamp the binding is
// unverified anyway, and /proc is read.
func agentEnviron(pid int, st *Stamp) (env []byte, cut []string, unchecked string, err error) {
	if st != nil {
		return st.Env, st.EnvCut, st.EnvUnchecked, nil
	}
	env, err = os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, nil, "", fmt.Errorf("read agent %d environment: %w", pid, ErrGone)
	}
	return env, nil, "", nil
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
