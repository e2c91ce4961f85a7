package pins

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// stallSave is called by Save after it let go of the lock that Check and
// Get take, before it writes the file: a no-op that tests replace to hold
// a save there.
var stallSave = func() {}

// HoldSaves makes every save call hold before it writes the file (the
// daemon's failpoints only: TestListWaitsForNoOtherServersPins).
func HoldSaves(hold func()) { stallSave = hold }

// snapshot is the store's content to write: each key's pins, encoded,
// in order.
type snapshot struct {
	keys  []string
	tools [][]string
	encs  [][][]byte
}

// snapshotLocked encodes the pins that changed since the last save and
// collects every pin's encoding (shared, never modified: a changed pin
// gets a new one).
func (s *Store) snapshotLocked() (snapshot, error) {
	var snap snapshot
	for key := range s.pins {
		snap.keys = append(snap.keys, key)
	}
	sort.Strings(snap.keys)
	for _, key := range snap.keys {
		tools := s.pins[key]
		enc := s.enc[key]
		if enc == nil {
			enc = map[string][]byte{}
			s.enc[key] = enc
		}
		names := make([]string, 0, len(tools))
		for t := range tools {
			names = append(names, t)
		}
		sort.Strings(names)
		encs := make([][]byte, len(names))
		for i, t := range names {
			b, ok := enc[t]
			if !ok {
				var err error
				if b, err = json.Marshal(tools[t]); err != nil {
					return snapshot{}, fmt.Errorf("tool pins: %w", err)
				}
				enc[t] = b
			}
			encs[i] = b
		}
		snap.tools = append(snap.tools, names)
		snap.encs = append(snap.encs, encs)
	}
	return snap, nil
}

// bytes is the file's content: {"key": {"tool": pin, ...}, ...}, a key
// and a tool a line.
func (snap snapshot) bytes() []byte {
	var b bytes.Buffer
	b.WriteString("{")
	for i, key := range snap.keys {
		if i > 0 {
			b.WriteString(",")
		}
		k, _ := json.Marshal(key) // a string: cannot fail
		b.WriteString("\n")
		b.Write(k)
		b.WriteString(": {")
		for j, t := range snap.tools[i] {
			if j > 0 {
				b.WriteString(",")
			}
			name, _ := json.Marshal(t)
			b.WriteString("\n  ")
			b.Write(name)
			b.WriteString(": ")
			b.Write(snap.encs[i][j])
		}
		b.WriteString("\n}")
	}
	b.WriteString("\n}\n")
	return b.Bytes()
}

// write replaces the file with snap: a temporary file beside it,
// fsynced, then renamed over it.
func (s *Store) write(snap snapshot) error {
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".pins-*")
	if err != nil {
		return fmt.Errorf("tool pins: %w", err)
	}
	_, err = tmp.Write(snap.bytes())
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("tool pins: save %s: %w", s.path, err)
	}
	return nil
}
