package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
)

// LabelPulled marks an image mcpcaged pulled itself (for a server that
// named it). Only such images are ever removed: one an administrator
// imported (`ctr images import`) stays until they remove it.
const LabelPulled = "io.mcpcage.pulled"

// PullTimeout bounds one pull of an image (fetch and unpack). A pull runs
// on its own, not under the session that asked for it: sessions that want
// the same image while it is pulled share it, and a session whose client
// gives up does not waste what was fetched. A registry that trickles
// bytes ends with an error naming it after this long.
var PullTimeout = 10 * time.Minute

// MaxUserPulls bounds the pulls of images a user named (a server of
// their own: see [PullsCountedFor]) under way at once, per user. A pull
// goes on after the session that started it ends, for up to
// [PullTimeout], so a user's session bound does not bound pulls: a user
// allowed any registry could otherwise leave a pull of every image a
// stalling registry of theirs names running.
const MaxUserPulls = 4

// pullOwnerKey is the context key of [PullsCountedFor].
type pullOwnerKey struct{}

// PullsCountedFor marks the image pulls that ctx starts as asked for by
// user uid, whose own server named the image: they count toward
// [MaxUserPulls]. Pulls of the administrator's images are not counted.
func PullsCountedFor(ctx context.Context, uid uint32) context.Context {
	return context.WithValue(ctx, pullOwnerKey{}, uid)
}

// pullOwner is the user ctx's pulls count for (ok false: none).
func pullOwner(ctx context.Context) (uid uint32, ok bool) {
	uid, ok = ctx.Value(pullOwnerKey{}).(uint32)
	return uid, ok
}

// imageUse keeps taking images for sandboxes and removing unused ones
// apart, reference by reference: a slow registry holds the sessions of
// its own image only, never another image's or the collector.
type imageUse struct {
	mu       sync.Mutex
	taking   map[string]int           // references being taken for a sandbox
	pulls    map[string]*pull         // pulls under way, shared by their takers
	removing map[string]chan struct{} // references being removed; closed once gone
	byUser   map[uint32]int           // pulls under way that users' own servers started
}

type pull struct {
	done chan struct{}
	img  containerd.Image
	err  error
}

// errUserPulls: the user has MaxUserPulls pulls under way already.
var errUserPulls = errors.New("pulls of images your own servers named are still under way")

// take marks ref as being taken, once no removal of it is under way. The
// release it returns ends the mark.
func (u *imageUse) take(ctx context.Context, ref string) (release func(), err error) {
	for {
		u.mu.Lock()
		gone := u.removing[ref]
		if gone == nil {
			if u.taking == nil {
				u.taking = map[string]int{}
			}
			u.taking[ref]++
			u.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					u.mu.Lock()
					if u.taking[ref]--; u.taking[ref] == 0 {
						delete(u.taking, ref)
					}
					u.mu.Unlock()
				})
			}, nil
		}
		u.mu.Unlock()
		select {
		case <-gone:
		case <-ctx.Done():
			return nil, fmt.Errorf("image %s: waited for its removal (no server named it a moment ago): %w", ref, ctx.Err())
		}
	}
}

// startRemoving marks ref as being removed unless it is being taken; the
// done it returns ends the mark.
func (u *imageUse) startRemoving(ref string) (done func(), ok bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.taking[ref] > 0 {
		return nil, false
	}
	if u.removing == nil {
		u.removing = map[string]chan struct{}{}
	}
	gone := make(chan struct{})
	u.removing[ref] = gone
	return func() {
		u.mu.Lock()
		delete(u.removing, ref)
		u.mu.Unlock()
		close(gone)
	}, true
}

// image returns ref from containerd's image store, pulling and unpacking
// it when it is absent. Until release is called the collector leaves ref
// alone (Create releases it once its container holds the image).
func (l *Launcher) image(ctx context.Context, ref string) (_ containerd.Image, _ func(), err error) {
	release, err := l.images.take(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	img, err := l.client.GetImage(ctx, ref)
	if err == nil {
		if ok, _ := img.IsUnpacked(ctx, ""); !ok {
			if err := img.Unpack(ctx, ""); err != nil {
				return nil, nil, fmt.Errorf("unpack image %s: %w", ref, err)
			}
		}
		return img, release, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	p, err := l.pull(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("image %s: gave up waiting for its pull (it goes on for the next session): %w", ref, ctx.Err())
	}
	if p.err != nil {
		return nil, nil, p.err
	}
	return p.img, release, nil
}

// pull returns ref's pull under way, starting one when none is (one a
// user asks for within MaxUserPulls of theirs: see PullsCountedFor).
func (l *Launcher) pull(ctx context.Context, ref string) (*pull, error) {
	u := &l.images
	u.mu.Lock()
	defer u.mu.Unlock()
	if p := u.pulls[ref]; p != nil {
		return p, nil
	}
	owner, counted := pullOwner(ctx)
	if counted {
		if n := u.byUser[owner]; n >= MaxUserPulls {
			return nil, fmt.Errorf("image %s is not pulled yet, and %d %w (at most %d at a time; each ends within %s, or at once when its registry answers): try again once one has ended", ref, n, errUserPulls, MaxUserPulls, PullTimeout)
		}
		if u.byUser == nil {
			u.byUser = map[uint32]int{}
		}
		u.byUser[owner]++
	}
	if u.pulls == nil {
		u.pulls = map[string]*pull{}
	}
	p := &pull{done: make(chan struct{})}
	u.pulls[ref] = p
	// The pull's own mark keeps the collector off a half-pulled image
	// whose takers have all given up.
	u.taking[ref]++
	go func() {
		ctx, cancel := context.WithTimeout(l.ctx(context.Background()), PullTimeout)
		defer cancel()
		l.log.Info("pulling image", "image", ref)
		p.img, p.err = l.client.Pull(ctx, ref, containerd.WithPullUnpack, containerd.WithPullLabel(LabelPulled, "true"))
		if p.err != nil {
			why := p.err
			if errors.Is(why, context.DeadlineExceeded) {
				why = fmt.Errorf("not done after %s (a slow or stalled registry): %w", PullTimeout, why)
			}
			p.err = fmt.Errorf("image %s is not in containerd's store (namespace %s) and pulling it failed: %w: import it with `ctr -n %s images import FILE`", ref, l.ns, why, l.ns)
			l.log.Warn("image pull failed", "image", ref, "err", why)
		}
		u.mu.Lock()
		delete(u.pulls, ref)
		if u.taking[ref]--; u.taking[ref] == 0 {
			delete(u.taking, ref)
		}
		if counted {
			if u.byUser[owner]--; u.byUser[owner] <= 0 {
				delete(u.byUser, owner)
			}
		}
		u.mu.Unlock()
		close(p.done)
	}()
	return p, nil
}

// AfterContainersListed, when set (the daemon's failpoints only: see
// TestImageOfANewContainerIsKept), runs in each pass of
// RemoveUnusedImages once it has listed the containers.
var AfterContainersListed func()

// RemoveUnusedImages removes the images mcpcaged pulled (LabelPulled)
// that no server names any more (named reports whether one does) and no
// container uses (a live session's, or a warm sandbox's), with their
// content and unpacked layers. It returns the names it removed.
func (l *Launcher) RemoveUnusedImages(ctx context.Context, named func(ref string) bool) ([]string, error) {
	ctx = l.ctx(ctx)
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
	if AfterContainersListed != nil {
		AfterContainersListed()
	}
	var removed []string
	for _, img := range pulled {
		if used[img.Name] || named(img.Name) {
			continue
		}
		// A session taking it (or its pull) keeps it; one that comes
		// while it is removed waits for that, then pulls it again.
		done, ok := l.images.startRemoving(img.Name)
		if !ok {
			continue
		}
		// A session may have taken it, made its container and let go
		// since the containers were listed: asked again now that no new
		// one can (found by a red-team helper).
		if inUse, err := l.client.ContainerService().List(ctx, "image=="+strconv.Quote(img.Name)); err != nil || len(inUse) > 0 {
			done()
			if err != nil {
				return removed, fmt.Errorf("list the containers of image %s: %w", img.Name, err)
			}
			continue
		}
		// Synchronous: containerd's garbage collection has freed the
		// content and snapshots when it returns.
		err := l.client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete())
		done()
		if err != nil && !errdefs.IsNotFound(err) {
			return removed, fmt.Errorf("remove image %s: %w", img.Name, err)
		}
		removed = append(removed, img.Name)
	}
	return removed, nil
}
