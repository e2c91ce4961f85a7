package userservers

import (
	"encoding/json"
	"fmt"
)

// format is a version of the file layout (see the package documentation).
type format int

const (
	formatConfigServer format = 1 // config.Server values by name, no "version"
	formatCurrent      format = 2
)

// file is a version 2 file.
type file struct {
	Version format            `json:"version"`
	Servers map[string]Server `json:"servers"`
}

// encode writes a file of the current version.
func encode(servers map[string]Server) ([]byte, error) {
	b, err := json.MarshalIndent(file{Version: formatCurrent, Servers: servers}, "", "  ")
	return append(b, '\n'), err
}

// decode reads a file of any version.
func decode(b []byte) (map[string]Server, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	// In a version 1 file every member is a server, an object: a server
	// named "version" cannot pass for a version number.
	var v format
	if raw, ok := top["version"]; !ok || json.Unmarshal(raw, &v) != nil {
		return decodeConfigServers(top)
	}
	if v != formatCurrent {
		return nil, fmt.Errorf("format version %d is not one this mcpcaged reads (it reads %d and %d)", v, formatConfigServer, formatCurrent)
	}
	var f file
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	if f.Servers == nil {
		f.Servers = map[string]Server{}
	}
	return f.Servers, nil
}

// configServer is a version 1 server: config.Server as encoding/json wrote
// it (Go field names, every default filled). Only the
// keys a user could set are read; the others held the daemon's defaults
// of the day, which [Server.Config] fills afresh.
type configServer struct {
	Command []string
	Env     map[string]string
	Workdir string
	Network string
	Egress  []string
	Mounts  []struct {
		Source   string
		Target   string
		Readonly *bool
	}
}

func decodeConfigServers(top map[string]json.RawMessage) (map[string]Server, error) {
	out := make(map[string]Server, len(top))
	for name, raw := range top {
		var c configServer
		if err := json.Unmarshal(raw, &c); err != nil {
			return nil, fmt.Errorf("format %d, server %q: %w", formatConfigServer, name, err)
		}
		s := Server{Command: c.Command, Env: c.Env, Workdir: c.Workdir, Network: c.Network, Egress: c.Egress}
		for _, m := range c.Mounts {
			s.Mounts = append(s.Mounts, Mount{Source: m.Source, Target: m.Target, Writable: m.Readonly != nil && !*m.Readonly})
		}
		out[name] = s
	}
	return out, nil
}
