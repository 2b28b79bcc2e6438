package ship

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"syscall"
)

// fpBytes is how much of a file's head its fingerprint covers at most: the
// first line, or the first fpBytes bytes when that line is longer.
const fpBytes = 1024

// readChunk is the size of one read from an input.
const readChunk = 256 << 10

// fileID is a file's device and inode.
type fileID struct{ dev, ino uint64 }

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, true
}

func (id fileID) key() string {
	return strconv.FormatUint(id.dev, 16) + "." + strconv.FormatUint(id.ino, 16)
}

// fingerprint returns the hash of f's first line (at most fpBytes), or ""
// when that line is not complete yet and final is false.
func fingerprint(f *os.File, final bool) (string, error) {
	var head [fpBytes]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("cannot read head of %q: %w", f.Name(), err)
	}
	b := head[:n]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	} else if n < fpBytes && !final {
		return "", nil
	}
	if n == 0 {
		return "", nil
	}
	h := fnv.New64a()
	h.Write(b)
	return strconv.FormatUint(h.Sum64(), 16), nil
}

// reader reads one input (a file or stdin) and cuts complete lines into
// messages. It belongs to one goroutine.
type reader struct {
	path  string
	f     *os.File
	stdin bool
	id    fileID
	key   string // identity in message ids and the state: "<dev>.<ino>" or "stdin-<run id>"
	fp    string
	gen   uint32
	off   int64  // file offset of buf[0]: every byte before it is in a message
	buf   []byte // read but not yet cut
	eof   bool   // the last read hit the end
	skip  bool   // dropping the rest of an over-long line
	plan  []int64
	grown bool // data was read since the last check
}

// cutter holds the limits messages are cut by.
type cutter struct {
	lines    int // lines per message at most
	maxBytes int // bytes per message at most, unless one line is longer
	maxLine  int // a longer line is truncated to this (the server's payload limit)
}

// fill reads from r's input until EOF or until buf holds at least want
// bytes; it reports whether anything was read.
func (r *reader) fill(want int) (bool, error) {
	read := false
	for len(r.buf) < want {
		if cap(r.buf)-len(r.buf) < readChunk/4 {
			nb := make([]byte, len(r.buf), 2*cap(r.buf)+readChunk)
			copy(nb, r.buf)
			r.buf = nb
		}
		n, err := r.f.Read(r.buf[len(r.buf):cap(r.buf)])
		r.buf = r.buf[:len(r.buf)+n]
		if n > 0 {
			read, r.grown = true, true
			if r.stdin {
				// A pipe returns what was written so far: cut it now
				// rather than wait for a full chunk.
				r.eof = false
				return true, nil
			}
		}
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			r.eof = true
			return read, nil
		}
		if err != nil {
			return read, fmt.Errorf("cannot read %q: %w", r.path, err)
		}
		r.eof = false
	}
	return read, nil
}

// pos is the offset of the next byte r reads.
func (r *reader) pos() int64 { return r.off + int64(len(r.buf)) }

// next cuts the next message off buf: its bytes (a copy), its line count and
// the offset it ends at (it starts at r.off when called, unless the rest of
// an over-long line is skipped first: then next returns nothing, and the
// caller calls it again). ok is false when no message is ready: no complete
// line, or the next planned cut is beyond the data read, or fewer lines than
// a full message are there and more says the input has more to read. final
// means the input has ended: a last line without a newline is sent too.
func (r *reader) next(c cutter, final, more bool) (data []byte, lines int, end int64, truncated bool, ok bool) {
	if r.skip {
		i := bytes.IndexByte(r.buf, '\n')
		if i < 0 {
			r.off += int64(len(r.buf))
			r.buf = r.buf[:0]
			return nil, 0, 0, false, false
		}
		r.consume(i + 1)
		r.skip = false
		return nil, 0, 0, false, false
	}
	if len(r.buf) == 0 {
		return nil, 0, 0, false, false
	}
	for len(r.plan) > 0 {
		p := r.plan[0] - r.off
		if p <= 0 || p > int64(c.maxLine) {
			r.plan = r.plan[1:]
			continue
		}
		if p > int64(len(r.buf)) {
			if !final {
				return nil, 0, 0, false, false
			}
			r.plan = nil
			break
		}
		if r.buf[p-1] != '\n' && !final {
			r.plan = nil // not a line boundary any more: the file changed
			break
		}
		r.plan = r.plan[1:]
		n := int(p)
		lines = bytes.Count(r.buf[:n], []byte{'\n'})
		if r.buf[n-1] != '\n' {
			lines++
		}
		return r.take(n, lines, false)
	}
	n := 0
	for lines < c.lines {
		j := bytes.IndexByte(r.buf[n:], '\n')
		if j < 0 {
			rest := len(r.buf) - n
			if lines == 0 && rest >= c.maxLine {
				// One line longer than a message may be: send its head
				// alone and drop the rest up to its newline.
				d, l, e, _, ok := r.take(c.maxLine, 1, true)
				r.skip = true
				return d, l, e, true, ok
			}
			if final && rest > 0 && (lines == 0 || n+rest <= c.maxBytes) {
				n += rest
				lines++
			}
			if more && !final {
				// The input has more to read now: wait for it rather
				// than send a short message.
				return nil, 0, 0, false, false
			}
			break
		}
		lineEnd := n + j + 1
		if lines == 0 && lineEnd-1 > c.maxLine {
			d, l, e, _, ok := r.take(c.maxLine, 1, true)
			r.skip = true
			return d, l, e, true, ok
		}
		if lines > 0 && lineEnd > c.maxBytes {
			break
		}
		n = lineEnd
		lines++
		if n >= c.maxBytes {
			break
		}
	}
	if n == 0 {
		return nil, 0, 0, false, false
	}
	return r.take(n, lines, false)
}

// take cuts the first n bytes of buf into a message.
func (r *reader) take(n, lines int, truncated bool) ([]byte, int, int64, bool, bool) {
	data := make([]byte, n)
	copy(data, r.buf[:n])
	r.consume(n)
	return data, lines, r.off, truncated, true
}

func (r *reader) consume(n int) {
	r.off += int64(n)
	m := copy(r.buf, r.buf[n:])
	r.buf = r.buf[:m]
}

// reset restarts r at offset 0 of a truncated file, in a new generation.
func (r *reader) reset() error {
	if _, err := r.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("cannot rewind %q: %w", r.path, err)
	}
	r.gen++
	r.off, r.buf, r.fp, r.plan, r.skip, r.eof = 0, r.buf[:0], "", nil, false, false
	return nil
}
