// Command rawclient plays a local user's own client of mcpcaged's socket,
// which, unlike mcpcage, does not check that root serves it (in a user
// namespace of the user's, root is unmapped: uid 65534).
//
//	rawclient hold SOCKET N
//	rawclient ask SOCKET OP [NAME]
//	rawclient grant SOCKET SERVER TOOL
//
// hold keeps N connections to the socket open without sending a request
// (one the daemon closes, for a request that never came or with a
// refusal, is opened again), prints "open N" once all N are, prints each
// refusal as "refused: ERROR", and runs until its stdin ends.
//
// ask sends one request of operation OP (with NAME, and for secret-set
// the value on stdin; OP as in package api, "secret.set") and prints the answer: "ok", or "error: ERROR"
// with exit status 1. grant asks for a consent of the caller's own, for
// agent exe:/bin/true, answered the same way.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

func main() {
	switch {
	case len(os.Args) == 4 && os.Args[1] == "hold":
		n, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fail(err)
		}
		holdAll(os.Args[2], n)
	case (len(os.Args) == 4 || len(os.Args) == 5) && os.Args[1] == "ask":
		ask(os.Args[2:])
	case len(os.Args) == 5 && os.Args[1] == "grant":
		send(os.Args[2], api.Request{Version: api.Version, Op: api.OpGrant,
			Grant: &api.Grant{Agent: "exe:/bin/true", Server: os.Args[3], Tools: []string{os.Args[4]}}})
	default:
		fmt.Fprintln(os.Stderr, "usage: rawclient hold SOCKET N | rawclient ask SOCKET OP [NAME] | rawclient grant SOCKET SERVER TOOL")
		os.Exit(2)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "rawclient:", err)
	os.Exit(1)
}

// holdAll holds n connections to socket until stdin ends.
func holdAll(socket string, n int) {
	opened := make(chan struct{}, n)
	for range n {
		go hold(socket, opened)
	}
	for range n {
		<-opened
	}
	fmt.Println("open", n)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// hold keeps one connection to socket open, opening it again whenever
// the daemon closes it; opened is told of the first.
func hold(socket string, opened chan<- struct{}) {
	first := true
	for {
		c, err := net.Dial("unix", socket)
		if err != nil {
			fail(err)
		}
		if first {
			opened <- struct{}{}
			first = false
		}
		// Nothing is sent: the daemon closes it after its request wait,
		// or answers a refusal at once.
		if _, payload, err := api.NewFrameReader(c).Next(); err == nil {
			var r api.Reply
			_ = json.Unmarshal(payload, &r)
			fmt.Println("refused:", r.Error)
			time.Sleep(100 * time.Millisecond) // no busy loop against refusals
		}
		_ = c.Close()
	}
}

// ask sends one request: args are SOCKET OP [NAME].
func ask(args []string) {
	req := api.Request{Version: api.Version, Op: api.Op(args[1])}
	if len(args) == 3 {
		req.Name = args[2]
	}
	if req.Op == api.OpSecretSet {
		b, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		req.Secret = strings.TrimSuffix(string(b), "\n")
	}
	send(args[0], req)
}

// send sends req to socket and prints the answer.
func send(socket string, req api.Request) {
	c, err := net.Dial("unix", socket)
	if err != nil {
		fail(err)
	}
	body, _ := json.Marshal(req)
	// A refusal may come before the request is read, and the connection
	// be closed: the answer is read even when the write fails.
	werr := api.NewFrameWriter(c).Write(api.FrameRequest, body)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, payload, err := api.NewFrameReader(c).Next()
	if err != nil {
		fail(fmt.Errorf("no answer (%v): %w", werr, err))
	}
	var r api.Reply
	if err := json.Unmarshal(payload, &r); err != nil {
		fail(fmt.Errorf("answer %q: %w", payload, err))
	}
	if !r.OK && r.Error != "" {
		fmt.Println("error:", r.Error)
		os.Exit(1)
	}
	fmt.Println("ok")
}
