package relay

import "strings"

// OwnIDPrefix starts the string id of every request the daemon itself may
// send to the client. The namespace is reserved now so that no server and
// no client can ever occupy it: a server's request with such an id is
// refused, and a client's response with such an id is consumed here
// (nothing of the daemon's can be waiting for it unless the daemon asked).
const OwnIDPrefix = "mcpcage-"

// ownKey reports whether a correlation key (see wire.IDKey) lies in the
// daemon's own namespace.
func ownKey(key string) bool { return strings.HasPrefix(key, "s"+OwnIDPrefix) }
