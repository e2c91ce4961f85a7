package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
	"github.com/mcpcage/mcpcage/daemon/pins"
	"github.com/mcpcage/mcpcage/daemon/wire"
)

// Tool pinning (rug-pull defence): every tools/list the server answers is
// checked against the pins (package pins). A tool whose definition
// changed since it was approved, or a new one under pin_policy =
// "quarantine", is hidden from the agent and its calls are refused, with
// how to review and approve it; the session records the change with its
// diff (tool.changed). The pins outlive sessions and restarts.

// pinKey names the pins of the session's server: the server, or for a
// user's own server, the server and its owner.
func (d *Daemon) pinKey(server string, owner uint32) string {
	_, admin := d.conf().Servers[server]
	return pins.Key(server, owner, !admin)
}

// listStart notes, before a tools/list result is checked, whether the
// server had pins: its first list is pinned whole on first use, even
// under pin_policy = "quarantine".
func (p *sessionPolicy) listStart() {
	if p.d.pins != nil {
		p.pinsHad = p.d.pins.HasPins(p.s.pinKey)
	}
}

// savePins keeps what the checks of a list changed (at most one write a
// list, none when they changed nothing of its server's pins). A failed
// write leaves the pins in force in memory, and is logged.
func (p *sessionPolicy) savePins() {
	if p.d.pins == nil {
		return
	}
	p.noteOverflow()
	if err := p.d.pins.SaveFor(p.s.pinKey); err != nil {
		p.s.log.Error("tool pins not saved: they hold until mcpcaged stops", "err", err)
	}
}

// Markers, in the session's seen definitions, of tools held back
// without a pin.
const (
	unreadableDef = "unreadable" // its definition could not be pinned
	overflowDef   = "overflow"   // the pins of its server are full (pins.MaxTools)
)

// pinOverflow counts the tools of a session's lists held back because
// the pins of its server are full; it is logged and recorded once a
// session.
type pinOverflow struct {
	tools int    // in the list being checked
	first string // the first of them
	noted bool   // logged and recorded
}

// maxSessionDefs bounds the tool names a session keeps the definition it
// was shown of (found by a red-team helper: a server listing 3 million
// names, and again with new ones after list_changed, grew them without
// end). Past it, a tool the session has not kept is held back.
const maxSessionDefs = 2 * pins.MaxTools

// noteDef keeps def as what the session was shown of tool name, unless
// the session keeps maxSessionDefs names already (then defsFull holds
// back the names it could not keep). The caller holds p.mu.
func (p *sessionPolicy) noteDef(name, def string) {
	if _, ok := p.defs[name]; !ok && len(p.defs) >= maxSessionDefs {
		p.defsFull = true
		return
	}
	p.defs[name] = def
}

// unreadableRecorded notes that what the session was shown of name (a
// pin's name, of kind), raw, cannot be pinned, and says whether to log
// and record that (recordsChange: once per session and definition; the
// first for a pinned name and approval, else within the budget).
func (p *sessionPolicy) unreadableRecorded(kind heldKind, name string, raw []byte) bool {
	p.mu.Lock()
	p.noteDef(name, unreadableDef)
	p.mu.Unlock()
	_, record := p.recordsChange(p.unreadable(kind, name, raw))
	return record
}

// unreadable is the held-back definition raw of name, of kind, which
// cannot be pinned: against its pin, if it has one.
func (p *sessionPolicy) unreadable(kind heldKind, name string, raw []byte) heldBack {
	pin, pinned := p.d.pins.Get(p.s.pinKey, name)
	return heldBack{kind: kind, name: name, approved: pin.Approved.Digest, shown: unreadableShown(raw), pinned: pinned}
}

// overflowed notes a tool held back because the pins are full.
func (p *sessionPolicy) overflowed(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteDef(name, overflowDef)
	if p.overflow.tools == 0 {
		p.overflow.first = name
	}
	p.overflow.tools++
}

// noteOverflow logs and records, once a session, that a list had tools
// held back because the pins of its server are full.
func (p *sessionPolicy) noteOverflow() {
	p.mu.Lock()
	o := p.overflow
	p.overflow.tools, p.overflow.first = 0, ""
	p.overflow.noted = p.overflow.noted || o.tools > 0
	p.mu.Unlock()
	if o.tools == 0 || o.noted {
		return
	}
	s := p.s
	s.log.Warn("tools held back: the server lists more tools than mcpcage pins for one server", "held_back", o.tools, "max", pins.MaxTools)
	p.d.audit.AppendAsync(s.record(api.RecordToolChanged, audit.Record{"tool": o.first, "action": "held back", "held_back": o.tools,
		"reason": fmt.Sprintf("the server lists more tools than mcpcage pins for one server (%d): %d more are held back", pins.MaxTools, o.tools)}))
}

// checkPin checks one tool of a tools/list result against its pin and
// says whether it is quarantined; it notes the definition the session
// saw, which its calls are then judged by.
func (p *sessionPolicy) checkPin(name string, item []byte) bool {
	pol := p.srv.Pins()
	if pol == config.PinOff || p.d.pins == nil {
		return false
	}
	s := p.s
	if pins.IsUIResource(name) {
		// A UI resource's pin is under its URI: a tool so named would
		// share it (and approving either hold the other back).
		if p.unreadableRecorded(heldTool, name, item) {
			s.log.Warn("tool held back: its name is a UI resource's URI", "tool", name)
			p.d.audit.AppendAsync(s.toolUnpinnableRecord(name, errToolNamedAsUI))
		}
		return true
	}
	if _, pinned := p.d.pins.Get(s.pinKey, name); !pinned && p.d.pins.Full(s.pinKey) {
		p.overflowed(name) // held back whatever its definition: not read
		return true
	}
	def, err := pins.Canonical(item)
	if err != nil {
		if p.unreadableRecorded(heldTool, name, item) {
			s.log.Warn("tool held back: its definition cannot be pinned", "tool", name, "err", err)
			p.d.audit.AppendAsync(s.toolUnpinnableRecord(name, err))
		}
		return true
	}
	v, pin, _ := p.d.pins.Check(s.pinKey, name, def, pol == config.PinQuarantine && p.pinsHad, time.Now())
	if v == pins.Full {
		p.overflowed(name)
		return true
	}
	p.mu.Lock()
	p.noteDef(name, def.Digest)
	p.mu.Unlock()
	if v != pins.Changed && v != pins.Unpinned {
		return false
	}
	if fresh, record := p.recordsChange(heldBack{heldTool, name, pin.Approved.Digest, def.Digest, true}); fresh {
		p.d.metrics.ToolDefinitionsChanged.WithLabelValues(s.serverLabel).Inc()
		if record {
			s.log.Warn("tool quarantined: its definition is not the approved one", "tool", name, "pin", pin.Approved.Digest, "now", def.Digest)
			p.d.audit.AppendAsync(s.toolChangedRecord(name, pin, def))
		}
	}
	return true
}

// checkInstructions checks the instructions of an initialize or
// server/discover result against their pin (pins.Instructions): the
// result to forward instead (without them) when they are not the
// approved ones, nil to forward it as it is. The first result pins what
// it holds, none included (as {"instructions": null}), under every
// pin_policy but "off": a server that had none and then gives some has
// them held back too. A result without instructions changes no pin
// (nothing reaches the model). Instructions that clients could read
// differently ("instructions" and "Instructions": Go clients match
// names in any case) are refused (refused says why).
func (p *sessionPolicy) checkInstructions(result []byte) (_ []byte, refused string) {
	if p.srv.Pins() == config.PinOff || p.d.pins == nil {
		return nil, ""
	}
	sp, found, err := wire.StrictMember(result, "instructions")
	if err != nil {
		return nil, "instructions that clients could read differently: " + err.Error()
	}
	s, name := p.s, pins.Instructions
	value := []byte("null")
	if found {
		value = sp.Of(result)
	} else if _, pinned := p.d.pins.Get(s.pinKey, name); pinned {
		return nil, ""
	}
	def, err := pins.Canonical(append(append([]byte(`{"instructions":`), value...), '}'))
	if err != nil {
		if _, record := p.recordsChange(p.unreadable(heldInstructions, name, value)); record {
			s.log.Warn("server instructions held back: they cannot be pinned", "err", err)
			p.d.audit.AppendAsync(s.toolUnpinnableRecord(name, err))
		}
		return p.holdInstructions(result)
	}
	v, pin, _ := p.d.pins.Check(s.pinKey, name, def, false, time.Now())
	if err := p.d.pins.SaveFor(s.pinKey); err != nil {
		s.log.Error("tool pins not saved: they hold until mcpcaged stops", "err", err)
	}
	switch v {
	case pins.Pinned, pins.PinnedNew:
		return nil, ""
	case pins.Full:
		if _, record := p.recordsChange(heldBack{kind: heldInstructions, name: name, shown: overflowDef}); record {
			s.log.Warn("server instructions held back: the pins of the server are full", "max", pins.MaxTools)
			p.d.audit.AppendAsync(s.toolUnpinnableRecord(name, fmt.Errorf("the pins of the server are full (%d)", pins.MaxTools)))
		}
		return p.holdInstructions(result)
	}
	if fresh, record := p.recordsChange(heldBack{heldInstructions, name, pin.Approved.Digest, def.Digest, true}); fresh {
		p.d.metrics.ToolDefinitionsChanged.WithLabelValues(s.serverLabel).Inc()
		if record {
			s.log.Warn("server instructions held back: they are not the approved ones", "pin", pin.Approved.Digest, "now", def.Digest)
			p.d.audit.AppendAsync(s.toolChangedRecord(name, pin, def))
		}
	}
	return p.holdInstructions(result)
}

// errToolNamedAsUI: a tool named with a ui:// URI is held back.
var errToolNamedAsUI = errors.New("its name is a UI resource's URI (ui://), under which the resource is pinned")

// checkListedUI checks what the resources/list entry item of the UI
// resource uri asks of a host (pins.CanonicalListing: its "_meta", which
// hosts fall back to for the page's CSP, permissions and domain, and its
// mimeType) against its pin, pins.Listed(uri), and says whether the entry
// is held back: the first list pins it (whatever the pin_policy but
// "off"); a later different one is hidden from the client, logged and
// recorded once per session and definition, until approved. Entries of
// other resources are not checked.
func (p *sessionPolicy) checkListedUI(uri string, item []byte) bool {
	if !pins.IsUIResource(uri) || p.srv.Pins() == config.PinOff || p.d.pins == nil {
		return false
	}
	s, name := p.s, pins.Listed(uri)
	def, asks, err := pins.CanonicalListing(uri, item)
	if err != nil {
		if p.unreadableRecorded(heldListed, name, item) {
			s.log.Warn("UI resource's list entry held back: it cannot be pinned", "resource", uri, "err", err)
			p.d.audit.AppendAsync(s.resourceChangedRecord(name, audit.Record{"action": "held back", "reason": err.Error()}))
		}
		return true
	}
	// An entry first seen after its page was pinned in another session
	// is not trusted on first use when it asks for something: a server
	// could leave it out until the page is approved, then widen the
	// page's CSP through it (found by a red-team helper).
	_, pagePinned := p.d.pins.Get(s.pinKey, uri)
	newQuarantined := asks && pagePinned && !p.pinnedHere(uri)
	v, pin, _ := p.d.pins.Check(s.pinKey, name, def, newQuarantined, time.Now())
	switch v {
	case pins.Pinned, pins.PinnedNew:
		return false
	case pins.Full:
		if _, record := p.recordsChange(heldBack{kind: heldListed, name: name, shown: overflowDef}); record {
			s.log.Warn("UI resource's list entry held back: the pins of the server are full", "resource", uri, "max", pins.MaxTools)
			p.d.audit.AppendAsync(s.resourceChangedRecord(name, audit.Record{"action": "held back", "reason": fmt.Sprintf("the pins of the server are full (%d)", pins.MaxTools)}))
		}
		return true
	}
	p.noteChanged(heldListed, name, pin, def)
	return true
}

// pinnedHere says whether this session made the pin of the UI resource
// uri (its first read).
func (p *sessionPolicy) pinnedHere(uri string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.uiPinnedHere[uri]
	return ok
}

// notePinnedHere notes that this session made the pin of uri: its list
// entry, seen in the same session, is trusted on first use with it.
// Bounded: past maxPinChangesSeen, entries first seen are held back.
func (p *sessionPolicy) notePinnedHere(uri string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.uiPinnedHere == nil {
		p.uiPinnedHere = map[string]struct{}{}
	}
	if len(p.uiPinnedHere) < maxPinChangesSeen {
		p.uiPinnedHere[uri] = struct{}{}
	}
}

// saveResourcePins keeps what the checks of a resources/list changed.
func (p *sessionPolicy) saveResourcePins() {
	if p.d.pins == nil {
		return
	}
	if err := p.d.pins.SaveFor(p.s.pinKey); err != nil {
		p.s.log.Error("tool pins not saved: they hold until mcpcaged stops", "err", err)
	}
}

// noteChanged logs and records, once per session and definition, that
// what the session was shown of the UI resource pin name (its content,
// heldResource, or its list entry, heldListed) is not the approved one.
func (p *sessionPolicy) noteChanged(kind heldKind, name string, pin pins.Pin, def pins.Definition) {
	fresh, record := p.recordsChange(heldBack{kind, name, pin.Approved.Digest, def.Digest, true})
	if !fresh {
		return
	}
	p.d.metrics.ToolDefinitionsChanged.WithLabelValues(p.s.serverLabel).Inc()
	if !record {
		return
	}
	s := p.s
	s.log.Warn("UI resource held back: it is not the approved one", "pin_name", name, "pin", pin.Approved.Digest, "now", def.Digest)
	fields := audit.Record{"action": "quarantined", "old_digest": pin.Approved.Digest, "new_digest": def.Digest, "diff": pins.Diff(pin.Approved.JSON, def.JSON, audit.MaxString)}
	if pin.Approved.Digest == "" {
		fields["reason"] = "a list entry first seen after its page was pinned, asking for more than its type: not trusted on first use"
	}
	p.d.audit.AppendAsync(s.resourceChangedRecord(name, fields))
}

// checkUIResource checks what a resources/read result gives for the UI
// resource uri (pins.IsUIResource) against its pin: "" to forward it,
// or why it is held back (the client gets that instead). The first read
// pins it, under every pin_policy but "off" (as the instructions); a
// later different one is held back until `mcpcage pins approve`, logged
// and recorded once per session and definition. A result without
// contents (input_required) changes nothing. In observe mode it is
// recorded, not enforced.
func (p *sessionPolicy) checkUIResource(uri string, result []byte) string {
	if p.srv.Pins() == config.PinOff || p.d.pins == nil {
		return ""
	}
	s := p.s
	def, found, err := pins.CanonicalResource(uri, result)
	if !found && err == nil {
		return ""
	}
	if err == nil && strings.ContainsAny(uri, " \t\r\n") {
		// No URI holds one, and pins.Listed names pins with one.
		err = errors.New("its URI holds white space")
	}
	srv, name := shellQuote(s.server), shellQuote(uri)
	held := func(why string) string {
		if p.observe {
			return ""
		}
		return fmt.Sprintf("the UI resource %q of server %s %s", uri, s.server, why)
	}
	if err != nil {
		if p.unreadableRecorded(heldResource, uri, result) {
			s.log.Warn("UI resource held back: it cannot be pinned", "resource", uri, "err", err)
			p.d.audit.AppendAsync(s.resourceChangedRecord(uri, audit.Record{"action": "held back", "reason": err.Error()}))
		}
		return held("cannot be pinned: " + err.Error())
	}
	v, pin, _ := p.d.pins.Check(s.pinKey, uri, def, false, time.Now())
	if err := p.d.pins.SaveFor(s.pinKey); err != nil {
		s.log.Error("tool pins not saved: they hold until mcpcaged stops", "err", err)
	}
	switch v {
	case pins.PinnedNew:
		p.notePinnedHere(uri)
		return ""
	case pins.Pinned:
		return ""
	case pins.Full:
		if _, record := p.recordsChange(heldBack{kind: heldResource, name: uri, shown: overflowDef}); record {
			s.log.Warn("UI resource held back: the pins of the server are full", "resource", uri, "max", pins.MaxTools)
			p.d.audit.AppendAsync(s.resourceChangedRecord(uri, audit.Record{"action": "held back", "reason": fmt.Sprintf("the pins of the server are full (%d)", pins.MaxTools)}))
		}
		return held(fmt.Sprintf("is held back: the server has more tools and UI resources than mcpcage pins for one server (%d)", pins.MaxTools))
	}
	p.noteChanged(heldResource, uri, pin, def)
	return held(fmt.Sprintf("changed since it was approved: review it with `mcpcage pins diff %s %s`, approve it with `mcpcage pins approve %s %s DIGEST`", srv, name, srv, name))
}

// resourceChangedRecord: a UI resource, or its list entry, was held back
// (tool.changed, with "resource" where a tool's has "tool", and "pin"
// when the pin is the list entry's: pins.Listed).
func (s *session) resourceChangedRecord(pinName string, fields audit.Record) audit.Record {
	uri, listed := strings.CutSuffix(pinName, pins.Listed(""))
	fields["resource"] = uri
	if listed {
		fields["pin"] = pinName
	}
	return s.record(api.RecordToolChanged, fields)
}

// holdInstructions is an initialize or server/discover result without
// its instructions (in observe mode, nil: recorded, not enforced).
func (p *sessionPolicy) holdInstructions(result []byte) ([]byte, string) {
	if p.observe {
		return nil, ""
	}
	return withoutInstructions(result)
}

// withoutInstructions is an initialize or server/discover result without
// its instructions.
func withoutInstructions(result []byte) ([]byte, string) {
	out, err := rewriteMembers(result, func(name string, value []byte) ([]byte, error) {
		if name == "instructions" {
			return nil, nil
		}
		return value, nil
	})
	if err != nil {
		return nil, "a result that clients could read differently: " + err.Error()
	}
	return out, ""
}

// quarantineReason is why a call of tool name is refused, "" when the
// definition the session was shown is the approved one (or, under
// "accept-new", the tool was never listed and so never pinned).
func (p *sessionPolicy) quarantineReason(name string) string {
	pol := p.srv.Pins()
	if p.d.pins == nil || pol == config.PinOff {
		return ""
	}
	pin, pinned := p.d.pins.Get(p.s.pinKey, name)
	p.mu.Lock()
	seen, listed := p.defs[name]
	unkept := !listed && p.defsFull
	p.mu.Unlock()
	var what string
	switch {
	case unkept:
		what = fmt.Sprintf("is held back: the server listed more tools than mcpcage keeps for one session (%d)", maxSessionDefs)
	case listed && seen == overflowDef, !pinned && p.d.pins.Full(p.s.pinKey):
		what = fmt.Sprintf("is held back: the server lists more tools than mcpcage pins for one server (%d); an administrator can set pin_policy = \"off\" for it, or have it list fewer tools", pins.MaxTools)
	case listed && seen == unreadableDef:
		what = "has a definition that cannot be pinned"
	case pinned && pin.Approved.Digest == "", !pinned && pol == config.PinQuarantine:
		what = "is not approved yet (pin_policy = \"quarantine\" holds new tools)"
	case !pinned:
		return ""
	case listed && seen != pin.Approved.Digest, !listed && pin.Pending != nil:
		what = "changed its definition since it was approved"
	default:
		return ""
	}
	// The server chose the name: quoted for the shell, so that the
	// commands it is pasted into run nothing but mcpcage.
	srv, tool := shellQuote(p.s.server), shellQuote(name)
	return fmt.Sprintf("tool %q of server %s %s: review it with `mcpcage pins diff %s %s`, approve it with `mcpcage pins approve %s %s DIGEST`",
		name, p.s.server, what, srv, tool, srv, tool)
}

// toolUnpinnableRecord: a tool whose definition cannot be pinned was held
// back.
func (s *session) toolUnpinnableRecord(tool string, err error) audit.Record {
	return s.record(api.RecordToolChanged, audit.Record{"tool": tool, "action": "held back", "reason": err.Error()})
}

// toolChangedRecord: a tool's definition is not the approved one; the
// diff is bounded (`mcpcage pins diff` shows it whole).
func (s *session) toolChangedRecord(tool string, pin pins.Pin, now pins.Definition) audit.Record {
	rec := audit.Record{"tool": tool, "old_digest": pin.Approved.Digest, "new_digest": now.Digest, "action": "quarantined"}
	if pin.Approved.Digest == "" {
		rec["reason"] = "a new tool; pin_policy = \"quarantine\""
	} else {
		rec["diff"] = pins.Diff(pin.Approved.JSON, now.JSON, audit.MaxString)
	}
	return s.record(api.RecordToolChanged, rec)
}

// pinOp lists pins, shows a diff, or approves a change.
func (d *Daemon) pinOp(fw *api.FrameWriter, peer Peer, req api.Request, log *slog.Logger) {
	if d.pins == nil {
		reply(fw, api.Reply{Code: api.CodeInternal, Error: "tool pins are unavailable: see the mcpcaged log"}, log)
		return
	}
	admin := d.isAdmin(peer)
	keys := map[string]bool{}
	for _, name := range d.serverNamesFor(peer) {
		if req.Server == "" || req.Server == name {
			keys[d.pinKey(name, peer.UID)] = true
		}
	}
	if admin && req.Server == "" {
		keys = nil // every server's, users' own ones included
	}
	switch req.Op {
	case api.OpPinApprove:
		// Approved tools are the caller's own sessions' (its own server),
		// or every user's, the caller's among them (an administrator's).
		if err := d.mayConsent(peer, "approve changed tools", true); err != nil {
			reply(fw, api.Reply{Code: api.CodeDenied, Error: err.Error()}, log)
			return
		}
		key := d.pinKey(req.Server, peer.UID)
		_, adminServer := d.conf().Servers[req.Server]
		if !keys[key] && keys != nil || adminServer && !admin {
			reply(fw, api.Reply{Code: api.CodeDenied, Error: fmt.Sprintf("only root or the admin group approve the tools of server %q; the owner approves a user's own server", req.Server)}, log)
			return
		}
		pin, err := d.pins.Approve(key, req.Name, req.Digest, userName(peer.UID), time.Now())
		if err != nil {
			reply(fw, api.Reply{Code: api.CodeNotFound, Error: err.Error()}, log)
			return
		}
		log.Info("tool definition approved", "server", req.Server, "tool", req.Name, "pin", pin.Approved.Digest)
		rec := audit.Record{"type": string(api.RecordToolChanged), "server": req.Server, "user": userName(peer.UID), "new_digest": pin.Approved.Digest, "action": "approved"}
		if pinKind(req.Name) == api.PinKindResource {
			rec["resource"] = req.Name
		} else {
			rec["tool"] = req.Name
		}
		if err := d.audit.Append(rec); err != nil {
			log.Error("tool approval not recorded in the audit log", "err", err)
		}
		d.pinsChanged(key)
		replyData(fw, pinInfo(pins.Entry{Key: key, Tool: req.Name, Pin: pin}, false), log)
	default:
		var out []api.PinInfo
		for _, e := range d.pins.List(keys) {
			if req.Server != "" && pinServer(e.Key) != req.Server || req.Name != "" && e.Tool != req.Name {
				continue
			}
			out = append(out, pinInfo(e, req.Name != ""))
		}
		if req.Name != "" && len(out) == 0 {
			reply(fw, api.Reply{Code: api.CodeNotFound, Error: fmt.Sprintf("no pin for tool %q of server %q: see `mcpcage pins`", req.Name, req.Server)}, log)
			return
		}
		replyData(fw, out, log)
	}
}

// pinsChanged tells the sessions of key's server that their tool list
// changed (an approved tool is shown again).
func (d *Daemon) pinsChanged(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.sessions {
		if s.pinKey == key {
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}
}

func pinServer(key string) string {
	server, _, _ := strings.Cut(key, "@")
	return server
}

// pinKind says what the pin of name is of.
func pinKind(name string) api.PinKind {
	switch {
	case name == pins.Instructions:
		return api.PinKindInstructions
	case pins.IsUIResource(name):
		return api.PinKindResource
	}
	return api.PinKindTool
}

func pinInfo(e pins.Entry, diff bool) api.PinInfo {
	server, owner, own := strings.Cut(e.Key, "@")
	info := api.PinInfo{Server: server, Tool: e.Tool, Kind: pinKind(e.Tool), Digest: e.Approved.Digest, ApprovedAt: e.ApprovedAt, ApprovedBy: e.ApprovedBy, Quarantined: e.Quarantined()}
	if own {
		if uid, err := strconv.ParseUint(owner, 10, 32); err == nil {
			info.Owner = userName(uint32(uid))
		}
	}
	if e.Pending != nil {
		info.Pending, info.PendingAt = e.Pending.Digest, e.PendingAt
		if diff {
			info.Diff = pins.Diff(e.Approved.JSON, e.Pending.JSON, 1<<20)
		}
	}
	return info
}
