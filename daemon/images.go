package daemon

import (
	"context"

	"github.com/distribution/reference"
)

// Images mcpcaged pulled for servers are removed once no server names
// them and no container uses them: a user who tries an image-based
// server and removes it, or an administrator who moves a server to a
// new tag, does not leave the old image's layers on the disk for good.
// Images an administrator imported are never touched
// (sandbox.LabelPulled).

// collectImagesSoon asks the image collector for a pass; asks made while
// one runs make one more pass after it.
func (d *Daemon) collectImagesSoon() {
	select {
	case d.imagesUnused <- struct{}{}:
	default:
	}
}

// collectImages runs passes of removeUnusedImages as they are asked for,
// until ctx ends.
func (d *Daemon) collectImages(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.imagesUnused:
			d.removeUnusedImages(ctx)
		}
	}
}

// removeUnusedImages is one pass: every image mcpcaged pulled that no
// server of the configuration or of any user names, and no container
// uses, is removed.
func (d *Daemon) removeUnusedImages(ctx context.Context) {
	named, err := d.namedImages()
	if err != nil {
		d.log.Warn("unused images are kept: the servers' images could not all be read", "err", err)
		return
	}
	removed, err := d.launcher.RemoveUnusedImages(ctx, func(ref string) bool { return named[normalImage(ref)] })
	for _, ref := range removed {
		d.log.Info("removed an image that no server names any more", "image", ref)
	}
	d.log.Debug("unused images checked", "removed", len(removed))
	if err != nil && ctx.Err() == nil {
		d.log.Warn("could not remove every unused image; the next pass tries again", "err", err)
	}
}

// namedImages are the images the configuration's servers and every
// user's own servers name, normalized (normalImage).
func (d *Daemon) namedImages() (map[string]bool, error) {
	named := map[string]bool{}
	for _, s := range d.conf().Servers {
		if s.Image != "" {
			named[normalImage(s.Image)] = true
		}
	}
	if d.userServers != nil {
		imgs, err := d.userServers.Images()
		if err != nil {
			return nil, err
		}
		for _, ref := range imgs {
			named[normalImage(ref)] = true
		}
	}
	return named, nil
}

// normalImage is ref in its full form (alpine:3 is
// docker.io/library/alpine:3), or as it is when it does not parse.
func normalImage(ref string) string {
	if r, err := reference.ParseDockerRef(ref); err == nil {
		return r.String()
	}
	return ref
}
