package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// parseLine checks a line's own hash and returns it with seq and prev.
func parseLine(line []byte) (hash string, seq uint64, prev string, err error) {
	const prefix = `{"hash":"`
	if !bytes.HasPrefix(line, []byte(prefix)) || len(line) < len(prefix)+65 || line[len(prefix)+64] != '"' {
		return "", 0, "", errors.New(`does not start with {"hash":"…"`)
	}
	hash = string(line[len(prefix) : len(prefix)+64])
	rest := line[len(prefix)+65:]
	canon := make([]byte, 0, len(rest)+1)
	canon = append(canon, '{')
	if len(rest) > 0 && rest[0] == ',' {
		rest = rest[1:]
	}
	canon = append(canon, rest...)
	var meta struct {
		Seq  json.Number `json:"seq"`
		Prev string      `json:"prev"`
	}
	if err := json.Unmarshal(canon, &meta); err != nil {
		return "", 0, "", fmt.Errorf("not JSON: %v", err)
	}
	n, err := meta.Seq.Int64()
	if err != nil || n <= 0 {
		return "", 0, "", errors.New("no valid seq")
	}
	sum := sha256.Sum256(canon)
	if hex.EncodeToString(sum[:]) != hash {
		return "", uint64(n), "", errors.New("its content does not match its hash (edited)")
	}
	return hash, uint64(n), meta.Prev, nil
}

// Report is the outcome of Verify.
type Report struct {
	Records  int
	FirstSeq uint64 // the oldest record present (older ones rotated away)
	LastSeq  uint64
	Head     string
}

// VerifyError names the first bad record.
type VerifyError struct {
	File string
	Line int
	Seq  uint64 // 0 when unknown
	Msg  string
}

func (e *VerifyError) Error() string {
	if e.Seq > 0 {
		return fmt.Sprintf("%s:%d: record seq %d: %s", e.File, e.Line, e.Seq, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Verify checks the chain across files (oldest first) and, when head is
// given, that nothing was cut from its end.
func Verify(files []string, head *Head) (Report, error) {
	var r Report
	var lastHash string
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return r, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		n := 0
		for sc.Scan() {
			n++
			line := sc.Bytes()
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			hash, seq, prev, err := parseLine(line)
			if err != nil {
				f.Close()
				return r, &VerifyError{File: path, Line: n, Seq: seq, Msg: err.Error()}
			}
			if r.Records == 0 {
				r.FirstSeq = seq
			} else {
				if seq != r.LastSeq+1 {
					f.Close()
					return r, &VerifyError{File: path, Line: n, Seq: seq, Msg: fmt.Sprintf("follows seq %d: records were deleted or reordered", r.LastSeq)}
				}
				if prev != lastHash {
					f.Close()
					return r, &VerifyError{File: path, Line: n, Seq: seq, Msg: "its prev does not match the record before it: records were deleted, inserted or reordered"}
				}
			}
			r.Records++
			r.LastSeq, lastHash = seq, hash
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return r, fmt.Errorf("read %s: %w", path, err)
		}
	}
	r.Head = lastHash
	if head != nil && head.Seq > 0 {
		if r.LastSeq < head.Seq {
			return r, &VerifyError{File: head.File, Seq: r.LastSeq, Msg: fmt.Sprintf("the log ends at seq %d but the chain head says %d: the end was cut off", r.LastSeq, head.Seq)}
		}
		if r.LastSeq == head.Seq && lastHash != head.Hash {
			return r, &VerifyError{File: head.File, Seq: r.LastSeq, Msg: "the last record differs from the chain head"}
		}
	}
	return r, nil
}
