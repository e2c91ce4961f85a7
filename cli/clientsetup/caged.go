package clientsetup

import (
	"strings"

	"github.com/mcpcage/mcpcage/api"
)

// socketFlag is mcpcage's flag naming the daemon's socket.
const socketFlag = "--socket"

// cagedRun reads an entry that runs mcpcage: name is the server of its
// `mcpcage run NAME`, and plain says the entry asks no more than that.
// A socket of the entry's own (--socket, or MCPCAGE_SOCKET in its env)
// points the shim at whatever listens there, not at mcpcaged: such an
// entry is not plain. ok is false for arguments that are not `run NAME`
// with at most a socket (a flag setup does not know, two names).
func cagedRun(e entry) (name string, plain, ok bool) {
	_, envSocket := e.Env[api.EnvSocket]
	plain = !envSocket && len(e.Args) == 2
	var words []string
	for i := 0; i < len(e.Args); i++ {
		a := e.Args[i]
		switch {
		case a == socketFlag && i+1 < len(e.Args):
			i++
			plain = false
		case strings.HasPrefix(a, socketFlag+"="):
			plain = false
		case strings.HasPrefix(a, "-"):
			return "", false, false
		default:
			words = append(words, a)
		}
	}
	if len(words) != 2 || words[0] != "run" {
		return "", false, false
	}
	return words[1], plain, true
}
