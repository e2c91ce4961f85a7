package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

// handle serves one connection: one request, then either a reply or a
// session.
func (d *Daemon) handle(ctx context.Context, c *net.UnixConn) {
	defer c.Close()
	peer, err := peerOf(c)
	if err != nil {
		d.log.Warn("rejecting connection without peer credentials", "err", err)
		return
	}
	log := d.log.With("peer_pid", peer.PID, "peer_uid", peer.UID)
	fr := api.NewFrameReader(c)
	fw := api.NewFrameWriter(c)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	t, payload, err := fr.Next()
	if err != nil {
		log.Debug("connection closed before a request", "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	var req api.Request
	if t != api.FrameRequest || json.Unmarshal(payload, &req) != nil {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: "malformed request: is this mcpcage CLI from the same release as mcpcaged?"}, log)
		return
	}
	if req.Version != api.Version {
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("protocol version %d is not supported by mcpcaged %s (want %d): use the mcpcage CLI from the same release", req.Version, Version, api.Version)}, log)
		return
	}
	switch req.Op {
	case api.OpRun:
		d.runSession(ctx, c, fr, fw, peer, req, log)
	case api.OpStatus:
		replyData(fw, d.status(ctx), log)
	case api.OpServers:
		replyData(fw, d.serverList(), log)
	default:
		reply(fw, api.Reply{Code: api.CodeBadRequest, Error: fmt.Sprintf("unknown operation %q", req.Op)}, log)
	}
}

func reply(fw *api.FrameWriter, r api.Reply, log *slog.Logger) {
	b, _ := json.Marshal(r)
	if err := fw.Write(api.FrameReply, b); err != nil {
		log.Debug("write reply", "err", err)
	}
}

func replyData(fw *api.FrameWriter, data any, log *slog.Logger) {
	b, err := json.Marshal(data)
	if err != nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: "encode reply: " + err.Error()}, log)
		return
	}
	reply(fw, api.Reply{OK: true, Data: b}, log)
}

func (d *Daemon) status(ctx context.Context) api.Status {
	cd := "connected"
	if v, err := d.launcher.Version(ctx); err != nil {
		cd = "unreachable: " + err.Error()
	} else {
		cd = "connected (containerd " + v + ", namespace " + d.cfg.Daemon.ContainerdNamespace + ")"
	}
	return api.Status{
		Version:    Version,
		Uptime:     time.Since(d.started).Round(time.Second).String(),
		Containerd: cd,
		Sessions:   d.SessionCount(),
		Servers:    d.cfg.ServerNames(),
		ConfigPath: d.cfg.Path,
	}
}

func (d *Daemon) serverList() []api.ServerInfo {
	var out []api.ServerInfo
	for _, name := range d.cfg.ServerNames() {
		s := d.cfg.Servers[name]
		out = append(out, api.ServerInfo{Name: name, Command: s.Command, Image: s.Image, Workdir: s.Workdir})
	}
	return out
}

func unknownServer(name string, known []string) string {
	if len(known) == 0 {
		return fmt.Sprintf("no server named %q; no servers are configured: add a [servers.%s] section to the mcpcaged config and restart it", name, name)
	}
	return fmt.Sprintf("no server named %q; configured servers: %s", name, strings.Join(known, ", "))
}
