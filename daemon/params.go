package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/userservers"
	"github.com/mcpcage/mcpcage/internal/fscred"
	"github.com/mcpcage/mcpcage/sandbox"
)

// identity is who a sandbox runs as.
type runIdentity struct {
	UID, GID uint32
	Name     string
	Home     string // the delegating user's real home on the host
}

// runAs decides the sandbox user: the configured user, else the delegating
// user; a root delegator's servers run as nobody unless user = "root".
func runAs(srv *config.Server, peer Peer) (runIdentity, error) {
	switch {
	case srv.User == "root":
		return runIdentity{UID: 0, GID: 0, Name: "root", Home: "/root"}, nil
	case strings.Contains(srv.User, ":"):
		u, g, _ := strings.Cut(srv.User, ":")
		uid, err1 := strconv.ParseUint(u, 10, 32)
		gid, err2 := strconv.ParseUint(g, 10, 32)
		if err1 != nil || err2 != nil {
			return runIdentity{}, fmt.Errorf("user %q is not UID:GID", srv.User)
		}
		id := runIdentity{UID: uint32(uid), GID: uint32(gid), Name: "u" + u}
		if pu, err := user.LookupId(u); err == nil {
			id.Name, id.Home = pu.Username, pu.HomeDir
		}
		return id, nil
	case srv.User != "":
		pu, err := user.Lookup(srv.User)
		if err != nil {
			return runIdentity{}, fmt.Errorf("user %q: %w", srv.User, err)
		}
		return fromUser(pu)
	case peer.UID == 0:
		return runIdentity{UID: 65534, GID: 65534, Name: "nobody"}, nil
	}
	pu, err := user.LookupId(strconv.FormatUint(uint64(peer.UID), 10))
	if err != nil {
		return runIdentity{UID: peer.UID, GID: peer.GID, Name: "u" + strconv.FormatUint(uint64(peer.UID), 10)}, nil
	}
	id, err := fromUser(pu)
	if err == nil {
		id.GID = peer.GID
	}
	return id, err
}

func fromUser(pu *user.User) (runIdentity, error) {
	uid, err1 := strconv.ParseUint(pu.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(pu.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return runIdentity{}, fmt.Errorf("user %s has a non-numeric uid or gid", pu.Username)
	}
	return runIdentity{UID: uint32(uid), GID: uint32(gid), Name: pu.Username, Home: pu.HomeDir}, nil
}

// delegatorHome is the home of the delegating user, for "~" in mounts.
func delegatorHome(peer Peer) (string, error) {
	pu, err := user.LookupId(strconv.FormatUint(uint64(peer.UID), 10))
	if err != nil {
		return "", fmt.Errorf("look up uid %d: %w", peer.UID, err)
	}
	return pu.HomeDir, nil
}

// paramsOptions control what sandboxParams resolves.
type paramsOptions struct {
	resolveSecrets bool   // false: env keeps "secret:NAME" (for display)
	agent          string // the session's agent: its own secrets first (see agentsecrets.go)
	checkMounts    bool   // false: missing mount sources are not an error (for display)
	resolveImage   bool   // false: an image's entrypoint is not looked up (nor pulled)
}

// sandboxParams maps a server definition and the delegating user onto
// sandbox parameters.
func (d *Daemon) sandboxParams(ctx context.Context, id string, srv *config.Server, peer Peer, o paramsOptions) (sandbox.Params, error) {
	who, err := runAs(srv, peer)
	if err != nil {
		return sandbox.Params{}, err
	}
	home := "/home/" + who.Name
	if who.UID == 0 {
		home = "/root"
	}
	p := sandbox.Params{
		ID:          "mcpcage-" + id,
		Hostname:    "mcpcage-" + srv.Name,
		Args:        srv.Command,
		Cwd:         srv.Workdir,
		UID:         who.UID,
		GID:         who.GID,
		Home:        home,
		Rootfs:      d.hostView.Rootfs,
		Host:        d.hostView.Dirs,
		CgroupsPath: "/" + d.conf().Daemon.ContainerdNamespace + "/mcpcage-" + id,
		MemoryBytes: int64(srv.Memory),
		Pids:        srv.Pids,
		CPUs:        srv.CPUs,
		HostNetwork: srv.Network == config.NetworkHost,
		Readonly:    srv.ReadonlyPaths,
		Seccomp:     sandbox.SeccompOptions{Mode: srv.Seccomp, Metadata: id},
		DenyNames:   denyNames(srv),
		Init:        d.initPath,
	}
	if d.seccompListener != nil {
		p.Seccomp.ListenerPath = d.seccompListener.Path()
	}
	admin := !srv.Personal
	if srv.Image != "" {
		p.Rootfs, p.Host = sandbox.ImageRootfs, nil
		if err := d.imageProcess(ctx, srv, peer.UID, admin, o.resolveImage, &p); err != nil {
			return sandbox.Params{}, err
		}
	}
	// Hide the daemon's own files and sockets, and the users' homes,
	// wherever they are configured.
	p.Hidden = append(p.Hidden, srv.HiddenPaths...)
	p.Hidden = append(p.Hidden, d.conf().Daemon.StateDir, d.conf().Daemon.Socket, filepath.Dir(d.conf().Daemon.Socket),
		d.conf().Daemon.ContainerdAddress)
	// Homes under /home and /root are out of view already (both are
	// private tmpfs mounts); homes elsewhere are masked.
	for _, h := range []string{who.Home, ""} {
		if h == "" {
			h, _ = delegatorHome(peer)
		}
		if h != "" && h != "/" && !underAny(h, "/home", "/root") {
			p.Hidden = append(p.Hidden, h)
		}
	}
	// A user's own server reads its owner's secrets only (usersecrets.go).
	env := map[string]string{}
	for k, v := range srv.Env {
		if name, ok := strings.CutPrefix(v, config.SecretPrefix); ok && o.resolveSecrets {
			var val string
			if admin {
				val, err = d.secretFor(name, o.agent)
			} else {
				val, err = d.userSecretFor(peer.UID, name)
			}
			if err != nil {
				return sandbox.Params{}, fmt.Errorf("env %s: %w", k, err)
			}
			v = val
		}
		env[k] = v
	}
	p.Env = env
	// A user's own server, and "~" in anyone's: the delegating user chose
	// the path or owns a directory on it.
	for _, m := range srv.Mounts {
		src, inHome := m.Source, false
		if src == "~" || strings.HasPrefix(src, "~/") {
			h, err := delegatorHome(peer)
			if err != nil {
				closePins(p)
				return sandbox.Params{}, fmt.Errorf("mount %s: cannot expand ~: %w", m.Source, err)
			}
			src, inHome = filepath.Join(h, strings.TrimPrefix(src, "~")), true
		}
		bm := sandbox.BindMount{Source: src, Target: m.Target, Writable: m.Writable()}
		switch {
		case o.checkMounts && (!admin || inHome):
			pinned, err := pinSource(src, peer, bm.Writable)
			if err != nil {
				closePins(p)
				return sandbox.Params{}, fmt.Errorf("%w: fix mounts of server %s", err, srv.Name)
			}
			bm = pinned
			bm.Target = m.Target
		case o.checkMounts:
			if _, err := os.Stat(src); err != nil {
				closePins(p)
				if errors.Is(err, os.ErrNotExist) {
					return sandbox.Params{}, fmt.Errorf("mount source %s does not exist: create it or fix mounts in [servers.%s]", src, srv.Name)
				}
				return sandbox.Params{}, fmt.Errorf("mount source %s: %w", src, err)
			}
		}
		if (!admin || inHome) && who.UID == peer.UID && who.GID == peer.GID && peer.UID != 0 {
			bm.Viewer = viewerOf(peer)
		}
		p.Mounts = append(p.Mounts, bm)
	}
	if !admin {
		if err := checkUserTargets(srv, peer, p.Host); err != nil {
			closePins(p)
			return sandbox.Params{}, fmt.Errorf("%w: fix mounts of server %s", err, srv.Name)
		}
	} else if err := checkHomeTargets(srv); err != nil {
		closePins(p)
		return sandbox.Params{}, err
	}
	if d.landlockOn {
		p.Landlock = sandbox.LandlockRules(p, false, nil)
		p.RequireLandlock = d.conf().Daemon.Landlock == config.LandlockRequire
	}
	return p, nil
}

// pullsCounted has the image pulls ctx starts for a user's own server
// count toward its owner's bound (sandbox.MaxUserPulls): the user named
// the image, and a pull outlives its session. owner is the user's uid,
// not the one the server runs as (root's own run as nobody: found by a
// red-team helper, a process of nobody's could take root's pulls).
func pullsCounted(ctx context.Context, srv *config.Server, owner uint32) context.Context {
	if srv.Personal {
		return sandbox.PullsCountedFor(ctx, owner)
	}
	return ctx
}

// imagePullWait bounds looking up an image's entrypoint, pull included.
const imagePullWait = 10 * time.Minute

// imageProcess checks a user's image against [daemon] user_images and,
// when the server names no command, puts the image's entrypoint (with the
// server's args in place of its CMD) and working directory into p.
func (d *Daemon) imageProcess(ctx context.Context, srv *config.Server, owner uint32, admin, resolve bool, p *sandbox.Params) error {
	if !admin {
		if err := d.checkUserImage(srv.Image); err != nil {
			return err
		}
	}
	if len(srv.Command) > 0 {
		return nil
	}
	if !resolve || d.launcher == nil {
		p.Args = append([]string{"(the entrypoint of " + srv.Image + ")"}, srv.Args...)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, imagePullWait)
	defer cancel()
	proc, err := d.launcher.ImageProcess(pullsCounted(ctx, srv, owner), srv.Image)
	if err != nil {
		return err
	}
	if p.Args = proc.Argv(srv.Args); len(p.Args) == 0 {
		return fmt.Errorf("image %s has neither an entrypoint nor a CMD: set command in [servers.%s]", srv.Image, srv.Name)
	}
	if p.Cwd == "" {
		p.Cwd = proc.WorkingDir
	}
	return nil
}

// pinSource opens a mount source as peer, at every launch: every
// directory of its fully resolved path must be searchable by peer and the
// object readable (writable for rw). The mount's source becomes the
// resolved path and its Pin the object checked, which the launcher
// compares with what the sandbox shows before the server runs.
func pinSource(src string, peer Peer, writable bool) (sandbox.BindMount, error) {
	f, err := userservers.OpenSource(src, userservers.CredOf(peer.UID, peer.GID), writable)
	if err != nil {
		return sandbox.BindMount{}, err
	}
	where, err := userservers.Where(f)
	if err != nil {
		_ = f.Close()
		return sandbox.BindMount{}, fmt.Errorf("mount source %s: %w", src, err)
	}
	return sandbox.BindMount{Source: where, Writable: writable, Pin: f}, nil
}

// viewerOf is peer as the deny_paths search of a mount they chose sees
// them: what they cannot reach their server (running as them) cannot
// either, and is not searched, so the masks show them no name from it.
func viewerOf(peer Peer) *sandbox.Cred {
	c := userservers.CredOf(peer.UID, peer.GID)
	return &sandbox.Cred{UID: c.UID, GID: c.GID, Groups: c.Groups}
}

// closePins closes the pinned mount sources of p (O_PATH descriptors:
// nothing to flush).
func closePins(p sandbox.Params) {
	for _, m := range p.Mounts {
		if m.Pin != nil {
			_ = m.Pin.Close()
		}
	}
}

// checkCommand verifies that a host-rootfs server's command exists in the
// sandbox's view of the host, so a typo is a launch error that says so
// instead of a server that dies at once. A user's own server's command is
// looked for as the user it runs as (fscred): the user named the path,
// and mcpcaged's answer would otherwise tell them whether a directory
// they cannot search (another user's home, one of root's) holds a
// program of that name.
func (d *Daemon) checkCommand(srv *config.Server, p sandbox.Params) error {
	if srv.Image != "" {
		return nil
	}
	if srv.Personal && (p.UID != 0 || p.GID != 0) {
		return fscred.Do(fscred.Cred(userservers.CredOf(p.UID, p.GID)), func() error { return d.findCommand(srv, p) })
	}
	return d.findCommand(srv, p)
}

// findCommand is checkCommand's search, with the calling thread's
// file-system credentials.
func (d *Daemon) findCommand(srv *config.Server, p sandbox.Params) error {
	cmd := srv.Command[0]
	candidates := []string{cmd}
	if !strings.Contains(cmd, "/") {
		candidates = nil
		for _, dir := range filepath.SplitList(sandbox.DefaultPath) {
			candidates = append(candidates, filepath.Join(dir, cmd))
		}
	} else if !filepath.IsAbs(cmd) {
		candidates = []string{filepath.Join(p.Cwd, cmd)}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			if !d.visible(c, p) {
				return fmt.Errorf("command %s is not visible in the sandbox (its top-level directory is private there): install it elsewhere, e.g. under /usr/local or /opt, or mount it", c)
			}
			return nil
		}
	}
	if srv.Personal {
		return fmt.Errorf("command %q not found, as you, in the sandbox's view of the host (PATH=%s): install it where you can run it, or fix the command of your server %s", cmd, sandbox.DefaultPath, srv.Name)
	}
	return fmt.Errorf("command %q not found in the sandbox's view of the host (PATH=%s): install it or fix command in [servers.%s]", cmd, sandbox.DefaultPath, srv.Name)
}

// visible reports whether a host path shows through the host view or a
// mount of p.
func (d *Daemon) visible(path string, p sandbox.Params) bool {
	for _, m := range p.Mounts {
		if path == m.Target || strings.HasPrefix(path, m.Target+"/") {
			return true
		}
	}
	for _, h := range p.Hidden {
		if path == h || strings.HasPrefix(path, h+"/") {
			return false
		}
	}
	for _, dir := range p.Host {
		if path == dir || strings.HasPrefix(path, dir+"/") {
			return true
		}
	}
	// Top-level symlinks (bin -> usr/bin) resolve into shared directories.
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		for _, dir := range p.Host {
			if strings.HasPrefix(real, dir+"/") {
				return true
			}
		}
	}
	return false
}

func underAny(path string, dirs ...string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}
