package remote_test

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mcpcage/mcpcage/daemon/relay"
	"github.com/mcpcage/mcpcage/daemon/remote"
)

// TestRelayRefusalDoesNotWedge: a remote server sends a request the relay
// refuses (an id in the daemon's namespace; with the real policy, any
// refused server request). The relay answers it from its server loop
// through Conn.Write; the server answers that POST with a message, which
// the bridge emits into Out, which that same loop reads. Write must not
// wait for the network, or the session wedges (found by review: the
// first version posted from Write). Kill must end the bridge.
func TestRelayRefusalDoesNotWedge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s := string(b)
		switch {
		case r.Method == http.MethodGet || r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusMethodNotAllowed)
		case strings.Contains(s, `"initialize"`):
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"x","version":"1"}}}`)
		case strings.Contains(s, `"tools/list"`):
			w.Header().Set("Content-Type", "text/event-stream")
			// a server request the relay refuses, then the answer
			_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":\"mcpcage-x\",\"method\":\"ping\"}\n\n")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[]}}\n\n")
		case !strings.Contains(s, `"method"`): // a response (the relay's refusal)
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hi"}}`)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/mcp")
	hc, err := remote.NewHTTPClient(remote.ClientOptions{LocalUIDs: []uint32{uint32(os.Geteuid())}, Hosts: []string{u.Host}, Server: "x"})
	if err != nil {
		t.Fatal(err)
	}
	conn := remote.New(remote.Options{URL: u, Server: "x", HTTP: hc, MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	cinR, cinW := io.Pipe()
	coutR, coutW := io.Pipe()
	r := relay.New(relay.Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
		relay.Streams{ClientIn: cinR, ClientOut: coutW})
	r.AttachServer(conn, conn.Out())
	go r.Run(nil)
	cr := bufio.NewReader(coutR)
	lines := make(chan string, 16)
	go func() {
		for {
			l, err := cr.ReadString('\n')
			if err != nil {
				close(lines)
				return
			}
			lines <- l
		}
	}()
	_, _ = io.WriteString(cinW, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}`+"\n")
	if l := <-lines; !strings.Contains(l, `"id":1,"result"`) {
		t.Fatalf("initialize: %s", l)
	}
	_, _ = io.WriteString(cinW, `{"jsonrpc":"2.0","method":"notifications/initialized"}`+"\n")
	go func() { _, _ = io.WriteString(cinW, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`+"\n") }()
	deadline := time.After(10 * time.Second)
	for answered := false; !answered; {
		select {
		case l := <-lines:
			answered = strings.Contains(l, `"id":2,"result"`)
		case <-deadline:
			t.Fatal("tools/list never answered: the session is wedged")
		}
	}
	// Does Kill end it?
	conn.Kill()
	select {
	case <-conn.Exited():
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("bridge did not exit 10s after Kill:\n%s", buf[:n])
	}
}
