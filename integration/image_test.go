package integration

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"
)

// ociArchive builds an OCI image layout tar holding the static test server
// at /bin/testserver and returns its path.
func ociArchive(t *testing.T, ref string) string {
	return ociArchiveWith(t, ref, map[string]any{"Env": []string{"PATH=/bin"}})
}

// ociArchiveWith is ociArchive with the image config's "config" member
// (Env, Entrypoint, Cmd, WorkingDir); the layer also holds /etc/where.
func ociArchiveWith(t *testing.T, ref string, config map[string]any) string {
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
	for name, content := range map[string]string{"image-marker": "ok", "etc/where": "in /etc"} {
		must(t, tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}), "tar")
		_, err = tw.Write([]byte(content))
		must(t, err, "tar")
	}
	must(t, tw.Close(), "tar")

	blobs := map[string][]byte{}
	put := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
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
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": cfgSize},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layerSize}},
	})
	mDigest, mSize := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mDigest, "size": mSize,
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
	for d, b := range blobs {
		add("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	must(t, out.Close(), "tar")
	must(t, f.Close(), "close")
	return path
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
