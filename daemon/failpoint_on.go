//go:build failpoints

package daemon

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcpcage/mcpcage/bpf"
	"github.com/mcpcage/mcpcage/daemon/pins"
	"github.com/mcpcage/mcpcage/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// With the tag "failpoints" (tests only: the integration tests'
// mcpcaged-failpoints), MCPCAGE_FAILPOINT_MAX_CLIENT_FILES lowers the
// daemon-wide bound of sessions holding client files (clientfiles.go),
// so that a test reaches it with one.
//
// MCPCAGE_FAILPOINT_SESSION_REPLY_DELAY (a duration) delays the reply that
// starts a session, once its server runs: what the server writes as it
// starts then comes before it (TestEarlyStderrComesAfterTheReply).
//
// MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT (a duration) replaces the 30 s an
// audit query or a trace waits for a client that reads nothing
// (TestStalledAuditQueriesBounded, TestStalledTraceDropped).
//
// MCPCAGE_FAILPOINT_PULL_TIMEOUT (a duration) replaces the 10 minutes an
// image's pull may take (TestStalledPullHoldsNoOtherImage).
//
// MCPCAGE_FAILPOINT_PINS_SAVE_GATE (a path) holds every write of the
// tool pins while PATH.arm exists and PATH does not: it creates
// PATH.reached, then waits until PATH exists (at most a minute)
// (TestListWaitsForNoOtherServersPins).
//
// MCPCAGE_FAILPOINT_IMAGES_GATE (a path) holds each pass of the unused
// image collector once it has listed the containers, while PATH.arm
// exists and PATH does not: it creates PATH.reached, then waits until PATH
// exists (at most a minute) (TestImageOfANewContainerIsKept).
//
// MCPCAGE_FAILPOINT_PANIC (WHERE:NAME, comma-separated) panics where a
// bug of mcpcaged's could: "decide:TOOL" deciding a call of TOOL (the
// client loop), "result:TOOL" recording a result of TOOL (the server
// loop), "op:OP" serving a request of OP, "kernel:KIND PATH" dealing with
// a session's kernel event, "answer:TOOL" dealing with the client's
// answer to a question about TOOL (a goroutine of the session's), and
// "started:SERVER" once a session of SERVER was answered and its server
// runs (TestBugEndsOnlyItsSession).
//
// MCPCAGE_FAILPOINT_CONTAINERD_REPLY_GATE (a path) holds the reply of
// the first call to containerd whose method ends with what PATH.arm
// holds ("Containers/Create", "Tasks/Create"), once containerd has
// carried it out: it creates PATH.reached, then waits until PATH exists
// (at most a minute). A caller's context cancelled meanwhile then fails
// the call, as gRPC fails a call whose reply has not come yet: what
// containerd created, the caller never heard of
// (TestStopDuringCreateLeavesNoContainer).
//
// MCPCAGE_FAILPOINT_CONTAINERD_REPLY_LOST (a method's end, as above)
// fails the first call to containerd of that method once containerd has
// carried it out, as a connection lost before the reply would
// (TestLostCreateReplyLeavesNoContainer).
//
// MCPCAGE_FAILPOINT_ANSWER_GATE (a path) holds an answer allowing a
// request between its check and its store: it creates PATH.reached, then
// waits until PATH exists (at most a minute), so that a test can hold the
// request's tool back in that window (TestAnswerWithdrawnWhenHeldBackWhileKept).
func init() {
	if spec := os.Getenv("MCPCAGE_FAILPOINT_PANIC"); spec != "" {
		at := map[string]bool{}
		for _, p := range strings.Split(spec, ",") {
			at[p] = true
		}
		failpointPanic = func(where, name string) {
			if at[where+":"+name] {
				panic("failpoint MCPCAGE_FAILPOINT_PANIC " + where + ":" + name)
			}
		}
		beforeSessionEvent = func(ev *bpf.Event) { failpointPanic("kernel", ev.Kind.String()+" "+ev.Path) }
	}
	if lose := os.Getenv("MCPCAGE_FAILPOINT_CONTAINERD_REPLY_LOST"); lose != "" {
		var once sync.Once
		sandbox.CallHook = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil && strings.HasSuffix(method, lose) {
				once.Do(func() { err = status.Error(codes.Unavailable, "failpoint: the reply was lost") })
			}
			return err
		}
	}
	if gate := os.Getenv("MCPCAGE_FAILPOINT_CONTAINERD_REPLY_GATE"); gate != "" {
		sandbox.CallHook = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if want, aerr := os.ReadFile(gate + ".arm"); aerr == nil && len(want) > 0 && strings.HasSuffix(method, strings.TrimSpace(string(want))) {
				if _, reached := os.Stat(gate + ".reached"); reached != nil { // the first such call only
					holdAtGate(gate)
					if ctx.Err() != nil {
						return status.FromContextError(ctx.Err()).Err()
					}
				}
			}
			return err
		}
	}
	if gate := os.Getenv("MCPCAGE_FAILPOINT_ANSWER_GATE"); gate != "" {
		beforeAnswerKept = func() { holdAtGate(gate) }
	}
	if d, err := time.ParseDuration(os.Getenv("MCPCAGE_FAILPOINT_AUDIT_WRITE_TIMEOUT")); err == nil && d > 0 {
		streamWriteTimeout = d
	}
	if gate := os.Getenv("MCPCAGE_FAILPOINT_PINS_SAVE_GATE"); gate != "" {
		pins.HoldSaves(func() { holdAtArmedGate(gate) })
	}
	if gate := os.Getenv("MCPCAGE_FAILPOINT_IMAGES_GATE"); gate != "" {
		sandbox.AfterContainersListed = func() { holdAtArmedGate(gate) }
	}
	if d, err := time.ParseDuration(os.Getenv("MCPCAGE_FAILPOINT_PULL_TIMEOUT")); err == nil && d > 0 {
		sandbox.PullTimeout = d
	}
	if d, err := time.ParseDuration(os.Getenv("MCPCAGE_FAILPOINT_SESSION_REPLY_DELAY")); err == nil && d > 0 {
		beforeSessionReply = func() { time.Sleep(d) }
	}
	if n, err := strconv.ParseInt(os.Getenv("MCPCAGE_FAILPOINT_MAX_CLIENT_FILES"), 10, 64); err == nil && n > 0 {
		maxClientFiles = n
	}
}

// holdAtArmedGate is holdAtGate while gate+".arm" exists.
func holdAtArmedGate(gate string) {
	if _, err := os.Stat(gate + ".arm"); err == nil {
		holdAtGate(gate)
	}
}

// holdAtGate creates gate+".reached", then waits until gate exists (at
// most a minute).
func holdAtGate(gate string) {
	_ = os.WriteFile(gate+".reached", nil, 0o644)
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(gate); err == nil {
			return
		}
	}
}
