package sandbox

import (
	"context"
	"fmt"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
)

// LabelPulled marks an image mcpcaged pulled itself (for a server that
// named it). Only such images are ever removed: one an administrator
// imported (`ctr images import`) stays until they remove it.
const LabelPulled = "io.mcpcage.pulled"

// image returns ref from containerd's image store, pulling and unpacking it
// when it is absent.
func (l *Launcher) image(ctx context.Context, ref string) (containerd.Image, error) {
	l.images.RLock()
	defer l.images.RUnlock()
	img, err := l.client.GetImage(ctx, ref)
	if err == nil {
		if ok, _ := img.IsUnpacked(ctx, ""); !ok {
			if err := img.Unpack(ctx, ""); err != nil {
				return nil, fmt.Errorf("unpack image %s: %w", ref, err)
			}
		}
		return img, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	l.log.Info("pulling image", "image", ref)
	img, err = l.client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPullLabel(LabelPulled, "true"))
	if err != nil {
		return nil, fmt.Errorf("image %s is not in containerd's store (namespace %s) and pulling it failed: %w: import it with `ctr -n %s images import FILE`", ref, l.ns, err, l.ns)
	}
	return img, nil
}

// RemoveUnusedImages removes the images mcpcaged pulled (LabelPulled)
// that no server names any more (named reports whether one does) and no
// container uses (a live session's, or a warm sandbox's), with their
// content and unpacked layers. It returns the names it removed.
func (l *Launcher) RemoveUnusedImages(ctx context.Context, named func(ref string) bool) ([]string, error) {
	ctx = l.ctx(ctx)
	l.images.Lock()
	defer l.images.Unlock()
	pulled, err := l.client.ImageService().List(ctx, fmt.Sprintf(`labels."%s"==true`, LabelPulled))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	if len(pulled) == 0 {
		return nil, nil
	}
	containers, err := l.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	used := map[string]bool{}
	for _, c := range containers {
		used[c.Image] = true
	}
	var removed []string
	for _, img := range pulled {
		if used[img.Name] || named(img.Name) {
			continue
		}
		// Synchronous: containerd's garbage collection has freed the
		// content and snapshots when it returns.
		if err := l.client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove image %s: %w", img.Name, err)
		}
		removed = append(removed, img.Name)
	}
	return removed, nil
}
