package userservers

import (
	"fmt"
	"maps"
	"slices"

	"github.com/mcpcage/mcpcage/config"
)

// Server is a user server as stored: the keys a user may set, and nothing
// else (see the package documentation).
type Server struct {
	Command []string          `json:"command"`
	URL     string            `json:"url,omitempty"`   // a remote server (no command, no sandbox keys)
	Hosts   []string          `json:"hosts,omitempty"` // the remote server's other hosts (its sign-in)
	Image   string            `json:"image,omitempty"` // an OCI image, normalized (docker.io/library/x:latest)
	Args    []string          `json:"args,omitempty"`  // with Image and no Command: its entrypoint's arguments
	Env     map[string]string `json:"env,omitempty"`
	Workdir string            `json:"workdir,omitempty"`
	Network string            `json:"network,omitempty"`
	Egress  []string          `json:"egress,omitempty"`
	Mounts  []Mount           `json:"mounts,omitempty"`
}

// Mount is a host path shown in the sandbox, read-only unless Writable.
type Mount struct {
	Source   string `json:"source"` // absolute host path, checked as the user when added
	Target   string `json:"target"` // absolute path in the sandbox
	Writable bool   `json:"writable,omitempty"`
}

// Config returns the daemon's definition of server name: s on mcpcage's
// default sandbox rules, validated (which fills the defaults). It never
// shares memory with s.
func (s Server) Config(name string) (*config.Server, error) {
	if len(s.Mounts) > MaxMounts {
		return nil, fmt.Errorf("%w: server %q has %d mounts, and one server of your own may have at most %d: mount a directory that holds them",
			ErrLimit, name, len(s.Mounts), MaxMounts)
	}
	srv := &config.Server{
		Remote:   config.Remote{URL: s.URL, Hosts: slices.Clone(s.Hosts)},
		Personal: true,
		Command:  slices.Clone(s.Command),
		Image:    s.Image,
		Args:     slices.Clone(s.Args),
		Env:      maps.Clone(s.Env),
		Workdir:  s.Workdir,
		Network:  s.Network,
		Egress:   slices.Clone(s.Egress),
	}
	for _, m := range s.Mounts {
		ro := !m.Writable
		srv.Mounts = append(srv.Mounts, config.Mount{Source: m.Source, Target: m.Target, Readonly: &ro})
	}
	if err := srv.Validate(name); err != nil {
		return nil, err
	}
	return srv, nil
}
