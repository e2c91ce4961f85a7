package relay

import (
	"bufio"
	"io"
	"log/slog"
	"strconv"
	"testing"
)

// BenchmarkRelayRequestResponse pushes request/response pairs through a
// relay (client -> server -> client) to measure the interceptor's own cost
// per message pair, next to the same traffic over bare pipes.
func BenchmarkRelayRequestResponse(b *testing.B) {
	for _, mode := range []string{"pipes", "relay"} {
		b.Run(mode, func(b *testing.B) {
			cinR, cinW := io.Pipe()
			coutR, coutW := io.Pipe()
			sinR, sinW := io.Pipe()
			soutR, soutW := io.Pipe()
			if mode == "relay" {
				r := New(Options{MaxMessageBytes: 1 << 20, Logger: slog.New(slog.DiscardHandler)},
					Streams{ClientIn: cinR, ClientOut: coutW, ServerIn: sinW, ServerOut: soutR})
				go r.Run(nil)
			} else {
				go func() { _, _ = io.Copy(sinW, cinR) }()
				go func() { _, _ = io.Copy(coutW, soutR) }()
			}
			// Echo server: answers each request line with a response line.
			go func() {
				br := bufio.NewReader(sinR)
				for i := 1; ; i++ {
					if _, err := br.ReadSlice('\n'); err != nil {
						return
					}
					if _, err := io.WriteString(soutW, `{"jsonrpc":"2.0","id":`+strconv.Itoa(i)+`,"result":{"content":[{"type":"text","text":"pong"}]}}`+"\n"); err != nil {
						return // the benchmark is over
					}
				}
			}()
			out := bufio.NewReader(coutR)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := io.WriteString(cinW, `{"jsonrpc":"2.0","id":`+strconv.Itoa(i)+`,"method":"tools/call","params":{"name":"echo","arguments":{"text":"ping"}}}`+"\n"); err != nil {
					b.Fatal(err)
				}
				if _, err := out.ReadSlice('\n'); err != nil {
					b.Fatal(err)
				}
			}
			cinW.Close()
			soutW.Close()
		})
	}
}
