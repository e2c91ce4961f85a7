// Command unreadclient plays a local user's client that sends requests to
// mcpcaged and never reads the answers: it opens N connections to the
// socket, sends each one request of operation OP, makes sure the daemon
// is answering it (it reads the answer's 5-byte frame header, nothing
// more), prints "sent N" and waits until its stdin ends, holding the
// connections unread.
//
// A request refused as busy (a small answer of code "busy") is sent
// again on a new connection, up to 100 times: the slot of the user's
// request before (the test's own CLI calls) is given back just after its
// answer was read, so the first of these may still find it taken.
//
//	unreadclient SOCKET OP N
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/mcpcage/mcpcage/api"
)

// smallAnswer: an answer this short is read whole (a refusal); the
// answers the test holds are far longer.
const smallAnswer = 16 << 10

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: unreadclient SOCKET OP N")
		os.Exit(2)
	}
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, "unreadclient: N:", err)
		os.Exit(2)
	}
	req, _ := json.Marshal(api.Request{Version: api.Version, Op: api.Op(os.Args[2])})
	var held []net.Conn
	for range n {
		c, err := holdOne(os.Args[1], req)
		if err != nil {
			fmt.Fprintln(os.Stderr, "unreadclient:", err)
			os.Exit(1)
		}
		held = append(held, c)
	}
	fmt.Println("sent", len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// holdOne sends req on a new connection and returns it once the daemon
// has begun to write a long answer to it.
func holdOne(socket string, req []byte) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		c, err := net.Dial("unix", socket)
		if err != nil {
			return nil, fmt.Errorf("connect: %w", err)
		}
		if err := api.NewFrameWriter(c).Write(api.FrameRequest, req); err != nil {
			return nil, fmt.Errorf("send: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var hdr [5]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return nil, fmt.Errorf("no answer begun within 30 s: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[1:])
		if size >= smallAnswer {
			return c, nil // being answered: held unread from here
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(c, body); err != nil {
			return nil, fmt.Errorf("read a short answer: %w", err)
		}
		_ = c.Close()
		var reply api.Reply
		if err := json.Unmarshal(body, &reply); err != nil || reply.Code != api.CodeBusy || attempt >= 100 {
			return nil, fmt.Errorf("a short answer, not a long one to hold: %s", body)
		}
		fmt.Fprintf(os.Stderr, "unreadclient: refused (%s), sending again\n", reply.Error)
		time.Sleep(50 * time.Millisecond)
	}
}
