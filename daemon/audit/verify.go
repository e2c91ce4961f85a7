package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

func hashOf(canon []byte) string {
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:])
}

// meta is what verification reads from a line.
type meta struct {
	Hash    string
	Seq     uint64
	Prev    string
	Type    string
	Segment uint64 // of an audit.segment record
	Oldest  uint64 // of an audit.segment record
	Lost    string // of an audit.gap record: what was lost, and why
}

const hashPrefix = `{"hash":"`

// parseLine checks a line's own hash and returns what verification needs.
// It does not copy the line (records written before they were bounded can
// be very long) but changes one byte of it while it runs.
func parseLine(line []byte) (meta, error) {
	var m meta
	if !bytes.HasPrefix(line, []byte(hashPrefix)) || len(line) < len(hashPrefix)+65 || line[len(hashPrefix)+64] != '"' {
		return m, errors.New(`does not start with {"hash":"…"`)
	}
	hash := string(line[len(hashPrefix) : len(hashPrefix)+64])
	// The canonical record is "{" followed by the line after the hash's
	// comma: put the brace over the comma.
	var canon []byte
	rest := line[len(hashPrefix)+65:]
	if len(rest) > 0 && rest[0] == ',' {
		rest[0] = '{'
		defer func() { rest[0] = ',' }()
		canon = rest
	} else {
		canon = append([]byte{'{'}, rest...)
	}
	var f struct {
		Seq     json.Number `json:"seq"`
		Prev    string      `json:"prev"`
		Type    string      `json:"type"`
		Segment uint64      `json:"segment"`
		Oldest  uint64      `json:"oldest_segment"`
		Lost    string      `json:"lost"`
	}
	if err := json.Unmarshal(canon, &f); err != nil {
		return m, fmt.Errorf("not JSON: %v", err)
	}
	n, err := f.Seq.Int64()
	if err != nil || n <= 0 {
		return m, errors.New("no valid seq")
	}
	m.Seq = uint64(n)
	if hashOf(canon) != hash {
		return m, errors.New("its content does not match its hash (edited)")
	}
	m.Hash, m.Prev, m.Type = hash, f.Prev, f.Type
	switch f.Type {
	case SegmentType:
		m.Segment, m.Oldest = f.Segment, f.Oldest
	case GapType:
		m.Lost = f.Lost
	}
	return m, nil
}

// Report is the outcome of Verify.
type Report struct {
	Records      int
	FirstSeq     uint64 // the oldest record present (older ones rotated away)
	LastSeq      uint64
	Head         string
	FirstSegment uint64 // 0: the oldest file predates segments
	LastSegment  uint64
	// Gaps are the audit.gap records: records the daemon found lost when
	// it resumed the chain. The chain is checked past them; one is enough
	// for Verify to fail.
	Gaps []Gap
}

// Gap is one audit.gap record.
type Gap struct {
	File string
	Line int
	Seq  uint64
	Lost string
}

// Damage classifies a verification failure.
type Damage string

// Kinds of damage.
const (
	Unreadable     Damage = "unreadable"      // a file cannot be read
	Edited         Damage = "edited"          // a record is not what was written
	Deleted        Damage = "deleted"         // records are missing, reordered or inserted inside a file
	OldestRemoved  Damage = "oldest_removed"  // a segment the log still keeps is gone from the start
	MiddleRemoved  Damage = "middle_removed"  // a segment is missing between two others
	NewestRemoved  Damage = "newest_removed"  // the segment(s) at the end are gone
	TailCut        Damage = "tail_cut"        // records are missing from the end
	Lost           Damage = "lost"            // the daemon found records lost when it resumed (audit.gap)
	HeadMismatched Damage = "head_mismatched" // the last record differs from the chain head
)

// VerifyError names the first bad record.
type VerifyError struct {
	Damage Damage
	File   string
	Line   int    // 0 when the problem is not one line
	Seq    uint64 // 0 when unknown
	Msg    string
}

func (e *VerifyError) Error() string {
	switch {
	case e.Line > 0 && e.Seq > 0:
		return fmt.Sprintf("%s:%d: record seq %d: %s", e.File, e.Line, e.Seq, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return e.Msg
}

// Verify checks the chain across files (oldest first): each record's hash,
// seq and prev; that segments follow each other and the oldest kept one is
// present; and, when head is given, that nothing was cut from the end.
func Verify(files []string, head *Head) (Report, error) {
	v := verifier{}
	if head != nil {
		v.headSeq = head.Seq
	}
	for _, path := range files {
		if err := v.file(path); err != nil {
			return v.r, err
		}
	}
	v.r.Head = v.lastHash
	// The end first: a removed newest segment is named as such, not as
	// the oldest one missing (found by a red-team helper).
	if head != nil {
		if err := v.tail(files, head); err != nil {
			return v.r, err
		}
	}
	if err := v.oldest(files); err != nil {
		return v.r, err
	}
	if len(v.r.Gaps) > 0 {
		g := v.r.Gaps[0]
		more := ""
		if len(v.r.Gaps) > 1 {
			more = fmt.Sprintf(" (and %d more audit.gap records)", len(v.r.Gaps)-1)
		}
		return v.r, &VerifyError{Damage: Lost, File: g.File, Line: g.Line, Seq: g.Seq,
			Msg: fmt.Sprintf("records were lost while mcpcaged was stopped, found when it started again: %s%s", g.Lost, more)}
	}
	return v.r, nil
}

type verifier struct {
	r        Report
	lastHash string
	lastFile string
	segments bool   // a segment header was seen
	segment  uint64 // the current file's segment (0: none)
	claimed  uint64 // the oldest segment kept, per the newest header
	headSeq  uint64 // the chain head's seq (0: none given)
	atHead   string // the hash of the (last) record at headSeq
}

func (v *verifier) file(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return &VerifyError{Damage: Unreadable, File: path, Msg: err.Error()}
	}
	defer func() { _ = f.Close() }()
	first := true
	err = Lines(f, func(n int, line []byte) error {
		m, err := parseLine(line)
		if err != nil {
			damage := Edited
			if m.Seq == 0 {
				damage = Unreadable
			}
			return &VerifyError{Damage: damage, File: path, Line: n, Seq: m.Seq, Msg: err.Error()}
		}
		if first {
			first = false
			if err := v.segmentStart(path, n, m); err != nil {
				return err
			}
		}
		if v.r.Records == 0 {
			v.r.FirstSeq, v.r.FirstSegment = m.Seq, v.segment
		} else {
			if m.Seq != v.r.LastSeq+1 {
				return &VerifyError{Damage: Deleted, File: path, Line: n, Seq: m.Seq, Msg: fmt.Sprintf("follows seq %d: records were deleted or reordered", v.r.LastSeq)}
			}
			if m.Prev != v.lastHash {
				return &VerifyError{Damage: Deleted, File: path, Line: n, Seq: m.Seq, Msg: "its prev does not match the record before it: records were deleted, inserted or reordered"}
			}
		}
		if m.Type == GapType {
			v.r.Gaps = append(v.r.Gaps, Gap{File: path, Line: n, Seq: m.Seq, Lost: m.Lost})
		}
		if m.Seq == v.headSeq {
			v.atHead = m.Hash // the last one: numbers come again after an audit.gap
		}
		v.r.Records++
		v.r.LastSeq, v.lastHash = m.Seq, m.Hash
		return nil
	})
	var ve *VerifyError
	if err != nil && !errors.As(err, &ve) {
		return &VerifyError{Damage: Unreadable, File: path, Msg: err.Error()}
	}
	if !first {
		v.lastFile = path
	}
	return err
}

// segmentStart checks a file's first record against the file before it.
func (v *verifier) segmentStart(path string, n int, m meta) error {
	if m.Type != SegmentType {
		if v.segments {
			return &VerifyError{Damage: Deleted, File: path, Line: n, Seq: m.Seq, Msg: fmt.Sprintf("the file does not start with its %s record: records were removed from its start", SegmentType)}
		}
		v.segment = 0
		return nil
	}
	switch {
	case !v.segments && m.Segment > 1 && v.r.Records > 0:
		return &VerifyError{Damage: Deleted, File: v.lastFile, Msg: fmt.Sprintf("the file does not start with its %s record but the next file is segment %d: records were removed from its start", SegmentType, m.Segment)}
	case v.segments && m.Segment > v.segment+1:
		return &VerifyError{Damage: MiddleRemoved, File: path, Line: n, Seq: m.Seq,
			Msg: fmt.Sprintf("a middle segment was removed: segment %d follows segment %d (%s); %s missing, records after seq %d", m.Segment, v.segment, v.lastFile, segRange(v.segment+1, m.Segment-1), v.r.LastSeq)}
	case v.segments && m.Segment <= v.segment:
		return &VerifyError{Damage: Deleted, File: path, Line: n, Seq: m.Seq, Msg: fmt.Sprintf("segment %d follows segment %d: files were reordered or copied", m.Segment, v.segment)}
	}
	v.segments, v.segment, v.claimed, v.r.LastSegment = true, m.Segment, m.Oldest, m.Segment
	return nil
}

// oldest checks that the oldest segment the log still keeps is present.
func (v *verifier) oldest(files []string) error {
	if v.r.FirstSegment == 0 || v.claimed == 0 || v.r.FirstSegment <= v.claimed {
		return nil
	}
	return &VerifyError{Damage: OldestRemoved, File: files[0],
		Msg: fmt.Sprintf("the oldest segment was removed: the log starts at segment %d (seq %d) but keeps segments from %d on; %s missing",
			v.r.FirstSegment, v.r.FirstSeq, v.claimed, segRange(v.claimed, v.r.FirstSegment-1))}
}

// tail checks the log's end against the chain head.
func (v *verifier) tail(files []string, head *Head) error {
	file := head.File
	if len(files) > 0 {
		file = files[len(files)-1]
	}
	if head.Segment > 0 && v.r.Records > 0 && !v.segments {
		// Files without headers are from before segments, and the chain
		// head says segments began: every header was cut, with the
		// records before it (one file's start, the rotated files gone).
		return &VerifyError{Damage: Deleted, File: files[0],
			Msg: fmt.Sprintf("no file starts with its %s record but the chain head is in segment %d: records were removed from the log's start (seq %d is the oldest left)", SegmentType, head.Segment, v.r.FirstSeq)}
	}
	if head.Segment > v.r.LastSegment && v.r.LastSeq < head.Seq {
		return &VerifyError{Damage: NewestRemoved, File: file,
			Msg: fmt.Sprintf("the newest segment was removed: the log ends at seq %d in segment %d but the chain head is seq %d in segment %d; %s missing",
				v.r.LastSeq, v.r.LastSegment, head.Seq, head.Segment, segRange(v.r.LastSegment+1, head.Segment))}
	}
	if v.r.LastSeq < head.Seq {
		return &VerifyError{Damage: TailCut, File: file, Seq: v.r.LastSeq,
			Msg: fmt.Sprintf("the end was cut off: the log ends at seq %d but the chain head says %d", v.r.LastSeq, head.Seq)}
	}
	if head.Seq > 0 && v.r.LastSeq == head.Seq && v.lastHash != head.Hash {
		return &VerifyError{Damage: HeadMismatched, File: file, Seq: v.r.LastSeq, Msg: "the last record differs from the chain head"}
	}
	if head.Seq > 0 && v.atHead != "" && v.atHead != head.Hash {
		// The log goes on past the head (records the head does not cover
		// yet, in batch mode), but the record the head saw is not there.
		return &VerifyError{Damage: HeadMismatched, File: file, Seq: head.Seq, Msg: fmt.Sprintf("the record at seq %d differs from the one the chain head recorded", head.Seq)}
	}
	return nil
}

func segRange(from, to uint64) string {
	if from == to {
		return fmt.Sprintf("segment %d is", from)
	}
	return fmt.Sprintf("segments %d to %d are", from, to)
}
