package daemon

import (
	"net"

	"github.com/coreos/go-systemd/v22/activation"
)

// listenFDs returns the listeners of socket activation ($LISTEN_FDS).
func listenFDs() []net.Listener {
	ls, err := activation.Listeners()
	if err != nil {
		return nil
	}
	var out []net.Listener
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}
