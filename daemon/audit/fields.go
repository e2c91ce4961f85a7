package audit

import (
	"cmp"
	"maps"
	"slices"
)

// Entry is what the log appends and reports: a Record (a map), or Fields
// (a list, for the records written on every call). Both are encoded the
// same way, into the same line: which one a caller built is never seen
// in the log.
type Entry interface {
	// Record is the entry as a map: the map itself for a Record, a new
	// map of the fields for Fields. After a write it holds what was
	// written (time, seq, prev, hash, bounded values).
	Record() Record
	// Type is the entry's "type" field ("" when it has none).
	Type() string
	entry() // only this package's types are entries
}

// Record is the map itself.
func (r Record) Record() Record { return r }

// Type is r's "type" field.
func (r Record) Type() string {
	t, _ := r["type"].(string)
	return t
}

func (Record) entry() {}

// Field is one field of Fields.
type Field struct {
	Key   string
	Value any
}

// Fields is a record built as a list of fields instead of a map: a
// session's relay writes two records per tools/call, and a map of their
// twenty fields is most of what building and encoding them costs (its
// table, hashing each key, then collecting and sorting the keys again to
// encode them). Fields are encoded exactly as the Record of the same
// fields would be: keys sorted, values bounded, the same bytes and hash.
// A key added twice keeps its last value, as a map's would. Like a
// Record, Fields belong to the Log once appended.
type Fields struct {
	list []Field
}

// NewFields returns empty Fields with room for n fields, and for the four
// the log adds (time, seq, prev, hash).
func NewFields(n int) *Fields {
	return &Fields{list: make([]Field, 0, n+4)}
}

// Add adds the field key with value v. It does not look for key first:
// a key added twice keeps its last value.
func (f *Fields) Add(key string, v any) {
	f.list = append(f.list, Field{key, v})
}

// Get is the value of key (the last added), and whether it is there.
func (f *Fields) Get(key string) (any, bool) {
	for i := len(f.list) - 1; i >= 0; i-- {
		if f.list[i].Key == key {
			return f.list[i].Value, true
		}
	}
	return nil, false
}

// Record is a new map of the fields.
func (f *Fields) Record() Record {
	r := make(Record, len(f.list))
	for _, fd := range f.list {
		r[fd.Key] = fd.Value
	}
	return r
}

// Type is the "type" field.
func (f *Fields) Type() string {
	v, _ := f.Get("type")
	t, _ := v.(string)
	return t
}

func (*Fields) entry() {}

// cloneEntry copies e's top level: encoding replaces top-level values
// (bounded, or the log's own fields) and copies nested maps and slices
// before it changes them, so the copy can be encoded and e encoded again
// later with the same result.
func cloneEntry(e Entry) Entry {
	switch x := e.(type) {
	case Record:
		return maps.Clone(x)
	case *Fields:
		return &Fields{list: slices.Clone(x.list)}
	}
	return e
}

// remove drops key.
func (f *Fields) remove(key string) {
	f.list = slices.DeleteFunc(f.list, func(fd Field) bool { return fd.Key == key })
}

// sorted orders the fields by key and keeps the last value of a key
// added twice. It reports whether a key is longer
// than MaxString: such a record is encoded as a map (see encodeFields).
func (f *Fields) sorted() (longKey bool) {
	slices.SortStableFunc(f.list, func(a, b Field) int { return cmp.Compare(a.Key, b.Key) })
	out := f.list[:0]
	for i, fd := range f.list {
		longKey = longKey || len(fd.Key) > MaxString
		if i+1 < len(f.list) && f.list[i+1].Key == fd.Key {
			continue // a later value of the same key wins
		}
		out = append(out, fd)
	}
	clear(f.list[len(out):])
	f.list = out
	return longKey
}

// appendFields is appendRecord for Fields: the fields sorted, each value
// bounded (in place) and rendered. ok is false when f must be encoded
// as a map instead (a key over MaxString, or a record over MaxRecord,
// which the map path bounds and shrinks); dst is then as it was.
func appendFields(dst []byte, f *Fields) (out []byte, ok bool, err error) {
	if f.sorted() {
		return dst, false, nil
	}
	// Bounded values are kept aside and set only once the record is
	// known to fit: a record over MaxRecord goes to the map path with its
	// values as given (bounding is not idempotent: a bounded key or
	// map[string]string value is itself over MaxString).
	type set struct {
		i int
		v any
	}
	var sets []set
	apply := func() {
		for _, s := range sets {
			f.list[s.i].Value = s.v
		}
	}
	start := len(dst)
	dst = append(dst, '{')
	for i := range f.list {
		fd := &f.list[i]
		if dst, err = appendMember(dst, i, fd.Key, fd.Value, func(v any) { sets = append(sets, set{i, v}) }); err != nil {
			apply()
			return dst[:start], true, err
		}
	}
	dst = append(dst, '}')
	if len(dst)-start > MaxRecord {
		return dst[:start], false, nil
	}
	apply()
	return dst, true, nil
}
