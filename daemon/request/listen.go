package request

import (
	"fmt"

	"github.com/mcpcage/mcpcage/daemon/wire"
)

// SubscriptionsListen opens a stream of change notifications (2026-07-28).
// Its params.notifications.resourceSubscriptions lists resource URIs for
// the server to watch: the stateless era's resources/subscribe, which
// needs a decision for each URI as that method does.
const SubscriptionsListen Method = "subscriptions/listen"

// MaxListenResources bounds the URIs one subscriptions/listen request may
// name (each is decided and recorded).
const MaxListenResources = 64

// Names read of a subscriptions/listen request.
var (
	listenParams        = []string{"notifications", "_meta"}
	listenNotifications = []string{"resourceSubscriptions"}
)

// ListenResources reads the resource URIs a subscriptions/listen request
// asks the server to watch (none when it asks for none), with the strict
// rules every decided request is read with: the names on the way to them
// spelled exactly and unambiguous at every depth of params; the list an
// array of non-empty URIs in normal form ([uri.Check]).
func ListenResources(params []byte) ([]string, error) {
	if len(params) == 0 || string(params) == "null" {
		return nil, nil
	}
	if params[0] != '{' {
		return nil, malformed("%s needs params as an object", SubscriptionsListen)
	}
	if err := wire.Tree(params, append(listenParams, listenNotifications...)); err != nil {
		return nil, err
	}
	members, err := wire.Object(params, listenParams)
	if err != nil {
		return nil, err
	}
	sp, ok := members["notifications"]
	if !ok {
		return nil, nil
	}
	n := sp.Of(params)
	if n[0] != '{' {
		return nil, malformed("%s params.notifications must be an object", SubscriptionsListen)
	}
	nm, err := wire.Object(n, listenNotifications)
	if err != nil {
		return nil, err
	}
	// A server whose models take a field by a snake_case name as well as
	// its camelCase alias (pydantic's populate_by_name, serde aliases)
	// would watch what this member lists, undecided: refused (defensive,
	// no SDK known to do so).
	if _, ok := nm["resource_subscriptions"]; ok {
		return nil, fmt.Errorf("%w: params.notifications has resource_subscriptions, which a server may read as resourceSubscriptions", wire.ErrAmbiguous)
	}
	sp, ok = nm["resourceSubscriptions"]
	if !ok || string(sp.Of(n)) == "null" {
		return nil, nil
	}
	// Counted before it is decoded (found by a red-team helper: a list of
	// 60 MiB of numbers was decoded whole, 2.2 GiB, before its length was
	// checked).
	count, ok := wire.Len(sp.Of(n))
	if !ok {
		return nil, malformed("%s params.notifications.resourceSubscriptions must be an array of URIs", SubscriptionsListen)
	}
	if count > MaxListenResources {
		return nil, malformed("%s names %d resources to watch, at most %d: open more streams", SubscriptionsListen, count, MaxListenResources)
	}
	v, err := wire.Decode(sp.Of(n))
	if err != nil {
		return nil, fmt.Errorf("params.notifications.resourceSubscriptions: %w", err)
	}
	list, ok := v.([]any)
	if !ok {
		return nil, malformed("%s params.notifications.resourceSubscriptions must be an array of URIs", SubscriptionsListen)
	}
	uris := make([]string, 0, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok || s == "" {
			return nil, malformed("%s params.notifications.resourceSubscriptions[%d] must be a non-empty URI", SubscriptionsListen, i)
		}
		if err := checkURI(s); err != nil {
			return nil, fmt.Errorf("params.notifications.resourceSubscriptions[%d]: %w", i, err)
		}
		uris = append(uris, s)
	}
	return uris, nil
}
