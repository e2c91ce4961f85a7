package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/secrets"
)

// Agent secrets: `mcpcage secret set NAME --agent AGENT` gives one agent
// its own value of secret NAME (its own upstream credential); sessions of
// that agent get it instead of the default value, so one agent's token is
// never another's. They live beside the default store, one root-only
// directory per agent.

// agentSecretsDir is where agent's own secrets live.
func (d *Daemon) agentSecretsDir(agent string) string {
	return filepath.Join(d.conf().Daemon.StateDir, "agent-secrets", agent)
}

// agentSecrets opens agent's store; nil when the agent has none and
// create is false.
func (d *Daemon) agentSecrets(agent string, create bool) (*secrets.Store, error) {
	if agent == "" || strings.HasPrefix(agent, "exe:") || strings.ContainsAny(agent, "/\x00") || agent == "." || agent == ".." {
		return nil, nil
	}
	dir := d.agentSecretsDir(agent)
	if !create {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
	}
	return secrets.Open(dir)
}

// checkSecretAgent accepts agents of the config only: an agent's secret
// must name an identity the daemon can recognise.
func (d *Daemon) checkSecretAgent(agent string) error {
	if _, ok := d.conf().Agents[agent]; !ok {
		return fmt.Errorf("no agent %q in the config: an agent's own secret is for a registered agent ([agents.%s])", agent, agent)
	}
	return nil
}

// secretFor resolves secret name for a session of agent: the agent's own
// value when it has one, else the default.
func (d *Daemon) secretFor(name, agent string) (string, error) {
	if st, err := d.agentSecrets(agent, false); err != nil {
		return "", err
	} else if st != nil {
		v, err := st.Get(name)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, secrets.ErrNotFound) {
			return "", err
		}
	}
	return d.secrets.Get(name)
}

// agentSecretValues lists every agent's own secret values (for the audit
// log's scrubbing).
func (d *Daemon) agentSecretValues() []string {
	root := filepath.Join(d.conf().Daemon.StateDir, "agent-secrets")
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && config.ValidSecretName(e.Name()) {
			out = append(out, dirValues(filepath.Join(root, e.Name()))...)
		}
	}
	return out
}
