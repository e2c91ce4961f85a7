// Command unreadclient plays a local user's client that sends requests to
// mcpcaged and never reads the answers: it opens N connections to the
// socket, sends each one request of operation OP, prints "sent N" and
// waits until its stdin ends, holding the connections unread.
//
//	unreadclient SOCKET OP N
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/mcpcage/mcpcage/api"
)

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
		c, err := net.Dial("unix", os.Args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, "unreadclient: connect:", err)
			os.Exit(1)
		}
		if err := api.NewFrameWriter(c).Write(api.FrameRequest, req); err != nil {
			fmt.Fprintln(os.Stderr, "unreadclient: send:", err)
			os.Exit(1)
		}
		held = append(held, c)
	}
	fmt.Println("sent", len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
}
