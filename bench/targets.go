package bench

import (
	"fmt"
	"math"
)

// The floors: bench/cmd/linerelay, a process between client and server
// that only copies messages (the floor of batch mode), and the same with
// --durable, which forwards the client's messages only once they are
// synced to disk (the floor of always mode).
const (
	floorPath        = "line relay (floor)"
	durableFloorPath = "line relay + fdatasync (floor of always)"
)

// Targets from the issue this harness tracks, checked against the
// table's medians. They are reported, never enforced.
const (
	targetAddedUs   = 100.0 // added p50, µs: batch; always on top of one fdatasync
	targetWarmMs    = 100.0 // cold start added from a warm sandbox, ms
	targetConcRatio = 0.8   // calls/s with -conc in flight, ÷ direct's
	targetDaemonMiB = 60.0  // mcpcaged RSS with no session, MiB
	targetPerSesMiB = 1.0   // and per open session
)

// targets compares each target with the medians the table shows, saying
// by how much each is met or missed.
func (r *report) targets() []string {
	med := func(path, fig string) float64 { return spreadOf(r.figs[path][fig]).med }
	const always, batch, srt = "mcpcage always", "mcpcage batch", "srt"
	var out []string
	out = append(out, goal{what: "mcpcage batch, added p50 vs direct", got: med(batch, "added50"),
		limit: targetAddedUs, limitText: fmt.Sprintf("%.0f µs", targetAddedUs), unit: " µs"}.String())
	if fl := med(floorPath, "added50"); !math.IsNaN(fl) {
		out = append(out, fmt.Sprintf("the floor: %s, added p50 vs direct: %.0f µs (the two extra cross-process hops alone); "+
			"mcpcage batch adds %.0f µs over it, the target allows %.0f µs over direct", floorPath, fl, med(batch, "added50")-fl, targetAddedUs))
	}
	sa := med(srt, "added50")
	out = append(out, goal{what: "mcpcage batch, added p50 vs srt's", got: med(batch, "added50"),
		limit: sa, limitText: fmt.Sprintf("srt's added p50 (%.0f µs)", sa), unit: " µs"}.String())
	fs, fs99 := med(always, "fsync50"), med(always, "fsync99")
	out = append(out, goal{what: "mcpcage always, added p50 vs direct", got: med(always, "added50"), limit: fs + targetAddedUs,
		limitText: fmt.Sprintf("one fdatasync of this disk (p50 %.0f µs; p99 %.0f µs) + %.0f µs = %.0f µs", fs, fs99, targetAddedUs, fs+targetAddedUs),
		unit:      " µs"}.String())
	if fl := med(durableFloorPath, "added50"); !math.IsNaN(fl) {
		out = append(out, fmt.Sprintf("the floor of always mode: %s, added p50 vs direct: %.0f µs (two hops and a group fdatasync); "+
			"mcpcage always adds %.0f µs over it, the target allows %.0f µs over direct", durableFloorPath, fl, med(always, "added50")-fl, fs+targetAddedUs))
	}
	for _, p := range []string{always, batch} {
		out = append(out, goal{what: fmt.Sprintf("%s, calls/s with %d in flight ÷ direct's", p, r.c.conc), got: med(p, "tputRatio"),
			limit: targetConcRatio, limitText: fmt.Sprintf("%.2f", targetConcRatio), atLeast: true, digits: 2}.String())
	}
	for _, f := range []struct{ floor, of string }{{floorPath, batch}, {durableFloorPath, always}} {
		if fl := med(f.floor, "tputRatio"); !math.IsNaN(fl) {
			out = append(out, fmt.Sprintf("the floor of %s with %d in flight: %s reaches %.2f× direct's calls/s; %s reaches %.2f (%.0f%% of its floor)",
				f.of, r.c.conc, f.floor, fl, f.of, med(f.of, "tputRatio"), 100*med(f.of, "tputRatio")/fl))
		}
	}
	sc := med(srt, "cold")
	for _, p := range []string{always, batch} {
		out = append(out, goal{what: p + ", cold start", got: med(p, "cold"),
			limit: sc, limitText: fmt.Sprintf("srt's (%.0f ms)", sc), unit: " ms"}.String())
	}
	out = append(out, goal{what: "mcpcage batch, cold start from a warm sandbox, added vs direct", got: med(batch, "coldWarmAdded"),
		limit: targetWarmMs, limitText: fmt.Sprintf("%.0f ms", targetWarmMs), unit: " ms"}.String())
	out = append(out, goal{what: "mcpcage batch, cold start from a warm sandbox", got: med(batch, "coldWarm"),
		limit: sc, limitText: fmt.Sprintf("srt's cold start (%.0f ms)", sc), unit: " ms"}.String())
	for _, s := range r.daemonMem {
		if s.sessions == 0 || s.sessions != r.scaleSessions {
			continue
		}
		limit := targetDaemonMiB + targetPerSesMiB*float64(s.sessions)
		out = append(out, goal{what: "mcpcaged RSS, sessions open: " + s.label, got: float64(s.mem.rss) / 1024, limit: limit,
			limitText: fmt.Sprintf("%.0f MiB + %d × %.0f MiB = %.0f MiB", targetDaemonMiB, s.sessions, targetPerSesMiB, limit),
			unit:      " MiB", digits: 1}.String())
	}
	return out
}

// goal is one target: got against limit, at most (or, with atLeast, at
// least).
type goal struct {
	what      string
	got       float64
	limit     float64
	limitText string
	atLeast   bool
	unit      string
	digits    int
}

func (g goal) String() string {
	op := "≤"
	if g.atLeast {
		op = "≥"
	}
	if math.IsNaN(g.got) || math.IsNaN(g.limit) {
		return fmt.Sprintf("%s: not measured (target %s %s)", g.what, op, g.limitText)
	}
	short := g.got - g.limit // by how much it misses
	if g.atLeast {
		short = -short
	}
	verdict := fmt.Sprintf("**met**, %.*f%s to spare", g.digits, -short, g.unit)
	if short > 0 {
		verdict = fmt.Sprintf("**missed by %.*f%s**", g.digits, short, g.unit)
		if g.limit > 0 {
			verdict += fmt.Sprintf(" (%.2f× the target)", g.got/g.limit)
		}
	}
	return fmt.Sprintf("%s: %.*f%s; target %s %s: %s", g.what, g.digits, g.got, g.unit, op, g.limitText, verdict)
}
