package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mcpcage/mcpcage/api"
	"github.com/mcpcage/mcpcage/config"
	"github.com/mcpcage/mcpcage/daemon/audit"
)

func auditCommand(socket *string, stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	var q api.AuditQuery
	var since, until string
	var jsonOut, raw bool
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log: sessions, tool calls with their decisions, and what the servers did",
		Long: `Audit prints the records of mcpcaged's tamper-evident audit log, oldest
first: sessions, each tools/call with its decision and the consent behind
it, and under each call (indented) the files the server opened, the
programs it ran and the connections it made while serving it.
Users see their own records; root and the admin group see all.

--since takes a duration back from now (1h, 30m, 2d) or a time;
--until a time. --type takes a type or a prefix (tool, net, file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if q.Since, err = timeArg(since); err != nil {
				return err
			}
			if q.Until, err = timeArg(until); err != nil {
				return err
			}
			c, err := api.Dial(api.SocketPath(*socket))
			if err != nil {
				return err
			}
			defer func() { _ = c.Close() }()
			r, err := c.Do(api.Request{Op: api.OpAudit, Audit: &q})
			if err != nil {
				return err
			}
			if !r.OK {
				return errors.New(r.Error)
			}
			w := bufio.NewWriter(stdout) // keeps the first write error for Flush
			// The history is shown in time order: kernel events reach the log
			// a little after the calls they belong to, and sort back under
			// them by the kernel's own timestamps.
			var history []json.RawMessage
			printLine := func(line []byte) {
				if raw {
					w.Write(line) // byte for byte: the hash chain holds
					w.WriteByte('\n')
					return
				}
				if jsonOut {
					w.Write(terminalJSON(line))
					w.WriteByte('\n')
					return
				}
				if rec, err := audit.ParseRecord(line); err == nil {
					fmt.Fprintln(w, formatRecord(rec))
				} else {
					fmt.Fprintf(w, "(a line of %d bytes that is not a record: see it with --json)\n", len(line))
				}
			}
			var lines lineJoiner
			for {
				t, payload, err := c.R.Next()
				if err != nil {
					break // the daemon closes the stream after the history (without --follow)
				}
				if t != api.FrameStdout {
					continue
				}
				lines.feed(payload, func(line []byte) {
					if q.Follow || raw { // raw: the log's order, which is the chain's
						printLine(line)
					} else {
						history = append(history, append(json.RawMessage(nil), line...))
					}
				})
				if q.Follow || raw {
					if err := w.Flush(); err != nil {
						return err
					}
				}
			}
			sort.SliceStable(history, func(i, j int) bool { return recordTime(history[i]) < recordTime(history[j]) })
			for _, line := range history {
				printLine(line)
			}
			return w.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.Agent, "agent", "", "only this agent")
	f.StringVar(&q.User, "user", "", "only this user (root and the admin group)")
	f.StringVar(&q.Server, "server", "", "only this server")
	f.StringVar(&q.Session, "session", "", "only this session")
	f.StringVar(&q.Type, "type", "", "only this type or type prefix")
	f.StringVar(&since, "since", "", "from (1h, 2d, or a time)")
	f.StringVar(&until, "until", "", "until (a time)")
	f.BoolVar(&q.Follow, "follow", false, "keep printing new records")
	f.BoolVar(&jsonOut, "json", false, "print the records as stored (JSON lines; invisible and control characters in strings as \\u escapes)")
	f.BoolVar(&raw, "raw", false, "print the log's lines byte for byte, in the log's order (for shipping and checking the hash chain elsewhere; nothing is escaped for a terminal)")

	cmd.AddCommand(auditVerifyCommand(stdout, stderr), auditDigestCommand(socket, stdin, stdout))
	return cmd
}

// maxDigestInput bounds what audit digest reads: what one request to the
// daemon carries.
const maxDigestInput = api.MaxFrame - 4096

func auditDigestCommand(socket *string, stdin io.Reader, stdout io.Writer) *cobra.Command {
	var prompt bool
	var user string
	cmd := &cobra.Command{
		Use:   "digest --user USER",
		Short: "Print the args_digest a tool call's arguments get in USER's records (root; JSON on stdin)",
		Long: `Digest reads a tool call's arguments (the JSON object, as the client
sent it) from stdin and prints the args_digest the audit log gives them,
so that a value can be matched with the records without keeping it in
the log. With --prompt it reads a server request's params and prints
their prompt_digest.

Digests are keyed (HMAC-SHA256 under a key of each user's, derived from
one mcpcaged makes at its first start, in its state directory): whoever
reads the log cannot test guesses of what redaction hid, not even with
calls of their own, so only root may ask, naming the user whose records
to match (their user field). The value is read from stdin, never taken
as an argument, so it does not appear in the process list.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := io.ReadAll(io.LimitReader(stdin, maxDigestInput+1))
			if err != nil {
				return fmt.Errorf("read the value from stdin: %w", err)
			}
			if len(b) > maxDigestInput {
				return fmt.Errorf("the value is over %d bytes, more than one request to mcpcaged carries", maxDigestInput)
			}
			kind := api.DigestArguments
			if prompt {
				kind = api.DigestPrompt
			}
			if user == "" {
				return errors.New("--user is required: each user's digests have a key of their own (give the records' user field)")
			}
			var out api.Digested
			if err := api.Call(api.SocketPath(*socket), api.Request{Op: api.OpDigest, Name: kind, User: user, Value: strings.TrimRight(string(b), "\n")}, &out); err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s %s\n", out.Field, out.Digest)
			return err
		},
	}
	cmd.Flags().BoolVar(&prompt, "prompt", false, "digest a server request's params (prompt_digest)")
	cmd.Flags().StringVar(&user, "user", "", "the user whose records to match (as their user field says)")
	return cmd
}

func auditVerifyCommand(stdout, stderr io.Writer) *cobra.Command {
	var headPath string
	var noHead bool
	cmd := &cobra.Command{
		Use:   "verify [FILE...]",
		Short: "Check the audit log's hash chain: any edit, deletion, reordering or truncation fails",
		Long: `Verify reads the audit log files (default: the configured audit_log and its
rotated files, oldest first, checked against the chain head audit.head in
state_dir) and exits non-zero with one line naming the first bad record,
or which segment was removed (the oldest, a middle one or the newest), or
that the end was cut off. It reads the files directly: run it as root.

Without the chain head a cut-off end cannot be detected, so a missing
audit.head fails unless --no-head is given. With FILEs (oldest first), the
head is checked only when --head names it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := func(err error) error {
				_, _ = fmt.Fprintf(stderr, "mcpcage: audit log verification FAILED: %v\n", err)
				return exitError(1)
			}
			files := args
			if len(files) == 0 {
				path, explicit := config.ResolvePath("")
				cfg, err := config.Load(path, explicit)
				if err != nil {
					return err
				}
				files = audit.Files(cfg.Daemon.AuditLog)
				if len(files) == 0 {
					return fmt.Errorf("no audit log at %s", cfg.Daemon.AuditLog)
				}
				if headPath == "" {
					headPath = filepath.Join(cfg.Daemon.StateDir, "audit.head")
				}
			}
			var head *audit.Head
			switch {
			case noHead:
			case headPath != "":
				h, err := audit.ReadHead(headPath)
				if errors.Is(err, fs.ErrNotExist) {
					return failed(fmt.Errorf("the chain head %s is missing, so a cut-off end cannot be detected (pass --no-head to verify without it)", headPath))
				}
				if err != nil {
					return failed(err)
				}
				head = &h
			}
			rep, err := audit.Verify(files, head)
			if err != nil {
				return failed(err)
			}
			note := ""
			if rep.FirstSeq > 1 {
				note = fmt.Sprintf(" (records before seq %d were rotated away)", rep.FirstSeq)
			}
			if head == nil {
				note += " (not checked against a chain head: a cut-off end would go unnoticed)"
			}
			_, err = fmt.Fprintf(stdout, "audit log OK: %d records, seq %d to %d%s, head %s\n", rep.Records, rep.FirstSeq, rep.LastSeq, note, short(rep.Head))
			return err
		},
	}
	cmd.Flags().StringVar(&headPath, "head", "", "the chain head file (default: audit.head in state_dir when no FILE is given)")
	cmd.Flags().BoolVar(&noHead, "no-head", false, "verify without the chain head (a cut-off end goes unnoticed)")
	return cmd
}

// lineJoiner reassembles the daemon's lines from frames: a record longer
// than a frame arrives split across several.
type lineJoiner struct{ partial []byte }

// feed adds a frame's payload and calls emit with each completed,
// non-blank line (valid only during the call).
func (j *lineJoiner) feed(payload []byte, emit func(line []byte)) {
	j.partial = append(j.partial, payload...)
	i := bytes.LastIndexByte(j.partial, '\n')
	if i < 0 {
		return
	}
	for _, line := range bytes.Split(j.partial[:i], []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			emit(line)
		}
	}
	j.partial = append(j.partial[:0], j.partial[i+1:]...)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// timeArg turns "1h"/"2d" into a time that far back, and checks times.
func timeArg(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err == nil {
			return time.Now().Add(-time.Duration(days) * 24 * time.Hour).UTC().Format(time.RFC3339Nano), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d).UTC().Format(time.RFC3339Nano), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t.UTC().Format(time.RFC3339Nano), nil
		}
	}
	return "", fmt.Errorf("%q: use a duration (1h, 2d) or a time (2026-11-25T10:00)", s)
}

// formatRecord renders one record on one line; kernel events are
// indented under the calls they happened in.
func formatRecord(r map[string]any) string {
	str := func(k string) string {
		if v, ok := r[k]; ok && v != nil {
			switch x := v.(type) {
			case string:
				return x
			case map[string]any:
				if t, ok := truncated(x); ok {
					return t
				}
				b, _ := json.Marshal(x)
				return string(b)
			default:
				b, _ := json.Marshal(x)
				return string(b)
			}
		}
		return ""
	}
	// What a client, a server or a user chose (a tool's or an agent's
	// name, a path): one value, quoted when it could pass for more
	// ("x agent=claude user=alice consent=c-1").
	q := func(k string) string {
		if m, ok := r[k].(map[string]any); ok {
			if _, ok := truncated(m); ok {
				// The log's stand-in for a long value: its prefix is the
				// chooser's text too (a tool name padded past 1 KiB
				// printed "x agent=claude user=root ..." bare: found by a
				// red-team helper).
				return quoteValue(str(k))
			}
		}
		return quoteValue(str(k))
	}
	ts := str("time")
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		ts = t.Local().Format("2006-01-02 15:04:05.000")
	}
	typ := str("type")
	sess := str("session")
	if len(sess) > 8 {
		sess = sess[:8]
	}
	head := fmt.Sprintf("%s %-8s %-15s", ts, sess, typ)
	indent := ""
	var detail string
	switch {
	case strings.HasPrefix(typ, "session."):
		detail = fmt.Sprintf("server=%s agent=%s user=%s instance=%s", q("server"), q("agent"), q("user"), q("agent_instance"))
		if typ == string(api.RecordSessionEnd) {
			detail += fmt.Sprintf(" reason=%s exit=%s allowed=%s denied=%s", str("reason"), str("exit_code"), str("calls_allowed"), str("calls_denied"))
		}
	case typ == string(api.RecordToolCall):
		detail = fmt.Sprintf("%s %s agent=%s user=%s", str("decision"), q("tool"), q("agent"), q("user"))
		if c := str("consent"); c != "" {
			detail += " consent=" + c
		}
		if why := str("reason"); why != "" {
			detail += " reason=" + why
		}
		detail += " id=" + q("request_id") // a string id is the client's text: quoted, as tool.result's
	case typ == string(api.RecordToolResult):
		detail = fmt.Sprintf("%s id=%s error=%s %sB %sms", q("tool"), q("request_id"), str("is_error"), str("result_bytes"), str("latency_ms"))
	case strings.HasPrefix(typ, "file.") || strings.HasPrefix(typ, "process.") || strings.HasPrefix(typ, "net."):
		indent = "    "
		detail = fmt.Sprintf("%s[%s] %s%s%s", q("comm"), str("pid"), q("path"), str("addr"), argv(r))
		if a := str("action"); a != "" {
			detail += " -> " + a + " (" + str("rule") + ")"
		}
		if calls := str("tool_calls"); calls != "" {
			detail += " during " + calls
		}
	case typ == audit.SegmentType:
		detail = fmt.Sprintf("segment %s (segments from %s kept)", str("segment"), str("oldest_segment"))
	case strings.HasPrefix(typ, "consent."):
		detail = fmt.Sprintf("%s agent=%s server=%s user=%s by=%s", str("consent"), q("agent"), q("server"), q("user"), q("by"))
	default:
		keys := make([]string, 0, len(r))
		for k := range r {
			switch k {
			case "hash", "prev", "seq", "time", "type", "session", "agent_instance":
				continue
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			detail += k + "=" + q(k) + " "
		}
	}
	// One line: what a client or a server chose (a tool's name, a path)
	// cannot start another or reach the terminal as a control sequence.
	return indent + printable(head+" "+strings.TrimSpace(detail))
}

// truncated renders the stand-in for an over-long value (see package
// audit): its prefix, then its length and digest.
func truncated(m map[string]any) (string, bool) {
	prefix, ok1 := m["truncated"].(string)
	sum, ok2 := m["sha256"].(string)
	n, ok3 := m["bytes"].(float64)
	if !ok1 || !ok2 || !ok3 || len(m) != 3 {
		return "", false
	}
	return fmt.Sprintf("%s…[%d bytes, sha256 %s]", prefix, int64(n), short(sum)), true
}

func argv(r map[string]any) string {
	a, ok := r["argv"].([]any)
	if !ok || len(a) == 0 {
		return ""
	}
	var parts []string
	for _, x := range a {
		parts = append(parts, quoteValue(fmt.Sprint(x)))
	}
	return " " + strings.Join(parts, " ")
}

// quoteValue is v in quotes (its quotes and backslashes escaped) when it
// holds a space, '=' or a quote: it would read as more than one value.
// Other characters are left for printable, which escapes the line.
func quoteValue(v string) string {
	if strings.ContainsAny(v, " =\"") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
	}
	return v
}

func recordTime(line []byte) string {
	var r struct {
		Time string `json:"time"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return "" // not a record: sorts first
	}
	if t, err := time.Parse(time.RFC3339Nano, r.Time); err == nil {
		return t.UTC().Format("2006-01-02T15:04:05.000000000")
	}
	return r.Time
}
