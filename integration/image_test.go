package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcpcage/mcpcage/internal/testenv"
)

// ociArchive builds an OCI image layout tar holding the static test server
// at /bin/testserver and returns its path.
func ociArchive(t *testing.T, ref string) string {
	return ociArchiveWith(t, ref, map[string]any{"Env": []string{"PATH=/bin"}})
}

// ociImage is a test image: its blobs by digest and its manifest's
// digest.
type ociImage struct {
	blobs    map[string][]byte
	manifest string
}

// buildImage builds an image holding the static test server at
// /bin/testserver, with the image config's "config" member (Env,
// Entrypoint, Cmd, WorkingDir); the layer also holds /etc/where and that
// member as /etc/image-config (so images of other configs share no
// layer: containerd fetches a layer once, for every pull that needs it).
func buildImage(t *testing.T, config map[string]any) ociImage {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, d := range []string{"bin/", "tmp/", "etc/"} {
		must(t, tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}), "tar")
	}
	bin, err := os.ReadFile(filepath.Join(env.bin, "testserver"))
	must(t, err, "read testserver")
	must(t, tw.WriteHeader(&tar.Header{Name: "bin/testserver", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}), "tar")
	_, err = tw.Write(bin)
	must(t, err, "tar")
	own, err := json.Marshal(config)
	must(t, err, "encode the image config")
	for name, content := range map[string]string{"image-marker": "ok", "etc/where": "in /etc", "etc/image-config": string(own)} {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}), "tar")
		_, err = tw.Write([]byte(content))
		must(t, err, "tar")
	}
	must(t, tw.Close(), "tar")

	img := ociImage{blobs: map[string][]byte{}}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		img.blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := put(layer.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": config,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	cfgDigest, cfgSize := put(cfg)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ociManifestType,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	img.manifest, _ = put(manifest)
	return img
}

const ociManifestType = "application/vnd.oci.image.manifest.v1+json"

// ociArchiveWith is ociArchive with the image config's "config" member.
func ociArchiveWith(t *testing.T, ref string, config map[string]any) string {
	t.Helper()
	img := buildImage(t, config)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": ociManifestType, "digest": img.manifest, "size": len(img.blobs[img.manifest]),
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref},
		}},
	})
	path := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(path)
	must(t, err, "create")
	out := tar.NewWriter(f)
	add := func(name string, b []byte) {
		must(t, out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}), "tar")
		_, err := out.Write(b)
		must(t, err, "tar")
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for d, b := range img.blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	must(t, out.Close(), "tar")
	must(t, f.Close(), "close")
	return path
}

// serveRegistry serves img as repository name, tag tag, over plain HTTP on
// loopback: the pull side of the distribution API, as containerd's client
// uses it (manifests by tag or digest, blobs by digest). It returns
// host:port; the client speaks plain HTTP to loopback registries.
func serveRegistry(t *testing.T, name, tag string, img ociImage) string {
	t.Helper()
	return serveRegistryWith(t, name, tag, img, nil)
}

// serveRegistryWith is serveRegistry with every request going through
// wrap first (nil: none).
func serveRegistryWith(t *testing.T, name, tag string, img ociImage, wrap func(http.Handler) http.Handler) string {
	t.Helper()
	prefix := "/v2/" + name + "/"
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			_, _ = w.Write([]byte("{}"))
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			http.NotFound(w, r)
			return
		}
		kind, ref, _ := strings.Cut(rest, "/")
		digest, ctype := ref, "application/octet-stream"
		switch {
		case kind == "manifests" && (ref == tag || ref == img.manifest):
			digest, ctype = img.manifest, ociManifestType
		case kind == "blobs":
		default:
			http.NotFound(w, r)
			return
		}
		b, ok := img.blobs[digest]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method != http.MethodHead {
			_, _ = w.Write(b)
		}
	})
	if wrap != nil {
		h = wrap(h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err, "listen")
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

func TestImageServer(t *testing.T) {
	const ref = "docker.io/mcpcage/testserver:itest"
	d := startDaemon(t, fmt.Sprintf("[servers.img]\nimage = %q\ncommand = [\"testserver\"]\n", ref))
	out, err := exec.Command("ctr", "--address", env.containerd, "-n", d.namespace, "images", "import", ociArchive(t, ref)).CombinedOutput()
	if err != nil {
		t.Fatalf("import image: %v %s", err, out)
	}
	c := d.connect(t, "img", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "from an image"}); got != "from an image" {
		t.Fatalf("echo = %q", got)
	}
	// The root is the image's, read-only: no host /usr, the marker file.
	if got, _ := callText(t, c, "read_file", map[string]any{"path": "/image-marker"}); got != "ok" {
		t.Fatalf("image marker: %q", got)
	}
	if got, isErr := callText(t, c, "list_dir", map[string]any{"path": "/usr"}); !isErr {
		t.Fatalf("host /usr visible in an image sandbox: %q", got)
	}
	if got, isErr := callText(t, c, "write_file", map[string]any{"path": "/image-marker", "content": "x"}); !isErr {
		t.Fatalf("image root is writable: %q", got)
	}
	_ = c.Close()
	d.waitClean("an image session")
	// A missing image that cannot be pulled is a clear launch error.
	bad := startDaemon(t, "[servers.gone]\nimage = \"localhost:1/none/such:1\"\ncommand = [\"x\"]\n")
	cmd := bad.shimCmd("gone")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "images import") {
		t.Fatalf("missing image: %v %q", err, stderr.String())
	}
}

// TestUnusedImagesRemoved: an image mcpcaged pulled for a server is
// removed, with its layers, once no server names it and no container
// uses it; an image the administrator imported stays.
func TestUnusedImagesRemoved(t *testing.T) {
	host := serveRegistry(t, "mcpcage/itest", "gc", buildImage(t, map[string]any{"Env": []string{"PATH=/bin"}}))
	pulled := host + "/mcpcage/itest:gc"
	const imported = "docker.io/mcpcage/imported:itest"
	section := fmt.Sprintf("[servers.img]\nimage = %q\ncommand = [\"testserver\"]\n", pulled)
	d := startDaemon(t, section)
	out, err := exec.Command("ctr", "--address", env.containerd, "-n", d.namespace, "images", "import", ociArchive(t, imported)).CombinedOutput()
	if err != nil {
		t.Fatalf("import image: %v %s", err, out)
	}
	images := func() string {
		out, err := exec.Command("ctr", "--address", env.containerd, "-n", d.namespace, "images", "ls").CombinedOutput()
		if err != nil {
			t.Fatalf("ctr images ls: %v %s", err, out)
		}
		return string(out)
	}
	passes := func() int { return strings.Count(d.log.String(), `msg="unused images checked"`) }

	c := d.connect(t, "img", mcp.ProtocolVersion20251125) // pulls the image from the registry
	if got, _ := callText(t, c, "echo", map[string]any{"text": "pulled"}); got != "pulled" {
		t.Fatalf("echo = %q", got)
	}
	if ls := images(); !strings.Contains(ls, pulled) || !strings.Contains(ls, "io.mcpcage.pulled=true") {
		t.Fatalf("the pulled image is not in the store with its label:\n%s", ls)
	}

	// The configuration stops naming it while its session runs: the
	// session's container still uses it.
	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	before := passes()
	must(t, os.WriteFile(d.config, []byte(strings.Replace(string(cfg), section, "", 1)), 0o644), "edit config")
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	testenv.WaitFor(t, "a pass after the reload", 20*time.Second, func() (bool, string) {
		return passes() > before, fmt.Sprintf("%d passes", passes())
	})
	if ls := images(); !strings.Contains(ls, pulled) {
		t.Fatalf("an image a live session uses was removed:\n%s", ls)
	}

	// The session ends: nothing uses or names the image any more.
	_ = c.Close()
	testenv.WaitFor(t, "the unused pulled image to go", 20*time.Second, func() (bool, string) {
		ls := images()
		return !strings.Contains(ls, pulled), ls
	})
	d.waitLog(`msg="removed an image that no server names any more"`)
	if ls := images(); !strings.Contains(ls, imported) {
		t.Fatalf("an imported image was removed:\n%s", ls)
	}
	d.waitClean("the image's session")
}

// TestStalledPullHoldsNoOtherImage: a registry that stalls holds the
// sessions of its own image only (found by a red-team helper). The image
// lock was held across the pull, which had no deadline, and the unused
// image collector, which runs after every reload and every user's
// `server add`/`rm`, waited for it exclusively, so every other image
// session queued behind it: root's took 25 s, or about 9.5 minutes with
// a registry that trickled. Now images are taken and removed reference by
// reference, a pull runs on its own with a deadline, and sessions that
// want the image meanwhile share it.
func TestStalledPullHoldsNoOtherImage(t *testing.T) {
	setup(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(open)
	// stall holds every layer's download until gate closes.
	stall := func(gate <-chan struct{}, asked *atomic.Bool) func(http.Handler) http.Handler {
		return func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/blobs/") {
					asked.Store(true)
					select {
					case <-gate:
					case <-r.Context().Done():
						return
					}
				}
				h.ServeHTTP(w, r)
			})
		}
	}
	var blobAsked, neverAsked atomic.Bool
	// Three images with no layer in common.
	img := func(name string) ociImage {
		return buildImage(t, map[string]any{"Env": []string{"PATH=/bin", "IMAGE=" + name}})
	}
	slow := serveRegistryWith(t, "mcpcage/stalled", "v1", img("stalled"), stall(release, &blobAsked)) + "/mcpcage/stalled:v1"
	fast := serveRegistry(t, "mcpcage/fast", "v1", img("fast")) + "/mcpcage/fast:v1"
	never := serveRegistryWith(t, "mcpcage/never", "v1", img("never"), stall(nil, &neverAsked)) + "/mcpcage/never:v1"
	d := startDaemon(t, fmt.Sprintf("[servers.slow]\nimage = %q\ncommand = [\"testserver\"]\n[servers.fast]\nimage = %q\ncommand = [\"testserver\"]\n[servers.never]\nimage = %q\ncommand = [\"testserver\"]\n", slow, fast, never),
		failpoints("MCPCAGE_FAILPOINT_PULL_TIMEOUT=15s"))

	// Two sessions of the stalled image: one pull, shared.
	first, second := startRaw(t, d.shimCmd("slow")), startRaw(t, d.shimCmd("slow"))
	testenv.WaitFor(t, "the stalled registry to be asked for a layer", 30*time.Second, func() (bool, string) {
		return blobAsked.Load(), d.log.String()
	})
	// The collector makes a pass meanwhile (a reload asks for one): it
	// used to wait for the pull, and every image session behind it.
	passes := func() int { return strings.Count(d.log.String(), `msg="unused images checked"`) }
	before := passes()
	must(t, d.cmd.Process.Signal(syscall.SIGHUP), "SIGHUP")
	testenv.WaitFor(t, "the collector's pass while the pull stalls", 20*time.Second, func() (bool, string) {
		return passes() > before, fmt.Sprintf("%d passes", passes())
	})
	// Another image's session starts and is served.
	c := d.connect(t, "fast", mcp.ProtocolVersion20251125)
	if got, _ := callText(t, c, "echo", map[string]any{"text": "not held"}); got != "not held" {
		t.Fatalf("echo through the other image = %q", got)
	}
	_ = c.Close()
	// The registry answers: both sessions of its image start, on one pull.
	open()
	first.initialize()
	second.initialize()
	if n := strings.Count(d.log.String(), `msg="pulling image" image=`+slow); n != 1 {
		t.Fatalf("the stalled image was pulled %d times for two sessions, want once:\n%s", n, d.log.String())
	}
	first.closeInput()
	second.closeInput()
	first.wait()
	second.wait()

	// A registry that never answers ends the pull at its deadline, with
	// an error naming the cause, for the session that waits.
	stuck := startRaw(t, d.shimCmd("never"))
	testenv.WaitFor(t, "the silent registry to be asked for a layer", 30*time.Second, func() (bool, string) {
		return neverAsked.Load(), d.log.String()
	})
	if code := stuck.wait(); code == 0 || !strings.Contains(stuck.stderr.String(), "a slow or stalled registry") {
		t.Fatalf("a session of an image whose registry never answers: exit %d, stderr %q", code, stuck.stderr.String())
	}
	d.waitClean("the image sessions")
}

// TestUsersPullsAreBounded: a pull goes on after the session that started
// it, for up to 10 minutes, so a user allowed a registry they control
// (user_images) could leave a pull of every image name it stalls on
// running, unbounded (left in an earlier note). Pulls of images a user's
// own servers named are bounded per user (sandbox.MaxUserPulls, 4): past
// it a session is refused at once, saying why; a pull another session
// already started is shared, not counted; the administrator's images are
// not counted.
func TestUsersPullsAreBounded(t *testing.T) {
	setup(t)
	uid, _ := testUser(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	open := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(open)
	var mu sync.Mutex
	asked := map[string]bool{} // tags (and digests) whose manifest was asked for
	tagsAsked := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(asked)
	}
	// Every manifest and layer waits for release.
	stall := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, tag, ok := strings.Cut(r.URL.Path, "/manifests/"); ok {
				mu.Lock()
				asked[tag] = true
				mu.Unlock()
			}
			if strings.Contains(r.URL.Path, "/manifests/") || strings.Contains(r.URL.Path, "/blobs/") {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	}
	host := serveRegistryWith(t, "mcpcage/stalled", "v1", buildImage(t, map[string]any{"Env": []string{"PATH=/bin"}}), stall)
	ref := func(tag string) string { return host + "/mcpcage/stalled:" + tag }
	d := startDaemon(t, fmt.Sprintf("[daemon]\nwarm_sandboxes = 0\nuser_images = [%q]\n[servers.adm]\nimage = %q\ncommand = [\"testserver\"]\n",
		host+"/mcpcage/*", ref("admin")))
	d.openToOtherUsers(t)
	const bound = 4 // sandbox.MaxUserPulls
	for i := 1; i <= bound+1; i++ {
		if out, err := d.cli(t, uid, "server", "add", fmt.Sprintf("p%d", i), "--image", ref(fmt.Sprintf("v%d", i))); err != nil {
			t.Fatalf("server add as the user: %v %s", err, out)
		}
	}
	asUser := func(name string) *rawSession {
		d.shimCred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		defer func() { d.shimCred = nil }()
		return startRaw(t, d.shimCmd(name))
	}
	var held []*rawSession
	for i := 1; i <= bound; i++ {
		held = append(held, asUser(fmt.Sprintf("p%d", i)))
	}
	held = append(held, asUser("p1")) // shares p1's pull
	testenv.WaitFor(t, fmt.Sprintf("%d pulls under way", bound), 30*time.Second, func() (bool, string) {
		return tagsAsked() == bound, fmt.Sprintf("%d tags asked for\n%s", tagsAsked(), d.log.String())
	})
	over := asUser(fmt.Sprintf("p%d", bound+1))
	if code := over.wait(); code == 0 || !strings.Contains(over.stderr.String(), "still under way") || !strings.Contains(over.stderr.String(), "at most 4") {
		t.Fatalf("a session past the user's pulls: exit %d, stderr %q; want it refused saying why", code, over.stderr.String())
	}
	if n := tagsAsked(); n != bound {
		t.Fatalf("%d images asked for of the registry, want %d: the refused session pulled", n, bound)
	}
	// The administrator's image is not the user's to count.
	admin := startRaw(t, d.shimCmd("adm"))
	testenv.WaitFor(t, "the administrator's image to be pulled", 30*time.Second, func() (bool, string) {
		return tagsAsked() == bound+1, fmt.Sprintf("%d tags asked for", tagsAsked())
	})
	// Once the registry answers, the pulls end and the user may pull again.
	open()
	for _, r := range append(held, admin) {
		_ = r.in.Close()
		r.wait()
	}
	again := asUser(fmt.Sprintf("p%d", bound+1))
	again.wait()
	mu.Lock()
	pulled := asked[fmt.Sprintf("v%d", bound+1)]
	mu.Unlock()
	if strings.Contains(again.stderr.String(), "still under way") || !pulled {
		t.Fatalf("the user's session once the pulls ended: stderr %q, its image asked for %v; want it pulled", again.stderr.String(), pulled)
	}
	d.waitClean("the image sessions")
}

// TestImageOfANewContainerIsKept: a pass of the unused-image collector
// that listed the containers before a session took the image, made its
// container and let go of it, must not remove the image from under that
// container (found by a red-team helper: the pass listed the containers
// once, and a session's mark on the image ends once its container holds
// it). The pass is held, by a failpoint, right after it listed them.
func TestImageOfANewContainerIsKept(t *testing.T) {
	setup(t)
	host := serveRegistry(t, "mcpcage/kept", "v1", buildImage(t, map[string]any{"Env": []string{"PATH=/bin", "IMAGE=kept"}}))
	pulled := host + "/mcpcage/kept:v1"
	gate := newFailpointGate(t)
	section := fmt.Sprintf("[servers.img]\nimage = %q\ncommand = [\"testserver\"]\n", pulled)
	d := startDaemon(t, "[daemon]\nwarm_sandboxes = 0\n"+section, failpoints(gate.env("MCPCAGE_FAILPOINT_IMAGES_GATE")))
	images := func() string {
		out, err := exec.Command("ctr", "--address", env.containerd, "-n", d.namespace, "images", "ls", "-q").CombinedOutput()
		must(t, err, "ctr images ls: %s", out)
		return string(out)
	}
	echo := func(c *mcpClient, text string) {
		t.Helper()
		if got, _ := callText(t, c, "echo", map[string]any{"text": text}); got != text {
			t.Fatalf("echo = %q, want %q", got, text)
		}
	}
	c := d.connect(t, "img", mcp.ProtocolVersion20251125) // pulls the image
	echo(c, "pulled")
	_ = c.Close()
	d.waitClean("the first session")
	cfg, err := os.ReadFile(d.config)
	must(t, err, "read config")
	reload := func(body string) { d.reloadTo(t, []byte(body)) }
	// The server is removed: a pass lists the containers (none uses the
	// image) and is held there.
	gate.arm(t)
	reload(strings.Replace(string(cfg), section, "", 1))
	gate.waitReached(t, "the collector's pass to be held", d.log.String)
	// It is added again and a session of it starts, on the image in the
	// store, while that pass waits.
	reload(string(cfg))
	c = d.connect(t, "img", mcp.ProtocolVersion20251125)
	echo(c, "in the new container")
	passes := strings.Count(d.log.String(), `msg="unused images checked"`)
	gate.open(t)
	testenv.WaitFor(t, "the held pass to end", 20*time.Second, func() (bool, string) {
		return strings.Count(d.log.String(), `msg="unused images checked"`) > passes, d.log.String()
	})
	if ls := images(); !strings.Contains(ls, pulled) {
		t.Fatalf("the pass removed the image of a running session's container:\n%s", ls)
	}
	echo(c, "still")
	_ = c.Close()
	d.waitClean("the second session")
}
