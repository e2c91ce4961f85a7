package audit

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
)

// Lines calls fn with each non-blank line of r (without its newline) and
// its 1-based line number. Lines may be of any length: records written
// before records were bounded can be many megabytes. The slice is valid
// only during the call. An error from fn stops the reading and is
// returned.
func Lines(r io.Reader, fn func(n int, line []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
		}
		if len(line) > 0 {
			n++
			if t := bytes.TrimRight(line, "\r\n"); len(bytes.TrimSpace(t)) > 0 {
				if ferr := fn(n, t); ferr != nil {
					return ferr
				}
			}
		}
		long = nil
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// firstLine returns a file's first non-blank line (nil for an empty file).
func firstLine(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var first []byte
	stop := errors.New("stop")
	err = Lines(f, func(_ int, line []byte) error {
		first = append([]byte(nil), line...)
		return stop
	})
	if err != nil && err != stop {
		return nil, err
	}
	return first, nil
}

// openSized opens path with flag and returns it with its size.
func openSized(path string, flag int) (*os.File, int64, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// lastLine returns a file's last non-blank line (nil for an empty file),
// reading backwards from the end so that resuming does not read the file.
func lastLine(path string) ([]byte, error) {
	f, size, err := openSized(path, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	const chunk = 64 << 10
	end := size // the line ends before end
	buf := make([]byte, chunk)
	// Skip trailing blanks, then find the newline before the line.
	pos, start := end, int64(-1)
	trailing := true
	for pos > 0 && start < 0 {
		n := min(int64(chunk), pos)
		pos -= n
		b := buf[:n]
		if _, err := f.ReadAt(b, pos); err != nil {
			return nil, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			c := b[i]
			if trailing {
				if c == '\n' || c == '\r' || c == ' ' || c == '\t' {
					end = pos + int64(i)
					continue
				}
				trailing = false
				continue
			}
			if c == '\n' {
				start = pos + int64(i) + 1
				break
			}
		}
	}
	if trailing {
		return nil, nil
	}
	if start < 0 {
		start = 0
	}
	line := make([]byte, end-start)
	if _, err := f.ReadAt(line, start); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(line), nil
}
