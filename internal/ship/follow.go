package ship

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// message is a byte range of one input, cut at line boundaries, on its way
// to the publisher. A message with done set carries no data: its input was
// closed for good (a rotated file drained) and its state can go once acked.
type message struct {
	key   string
	path  string
	id    fileID
	fp    string
	gen   uint32
	start int64
	end   int64
	lines int
	data  []byte
	stdin bool
	done  bool
	trunc bool // the message is the head of an over-long line
}

// follower reads one path: the file it names now, and files it named before
// a rotation until they are drained.
type follower struct {
	cfg      *Config
	cut      cutter
	path     string
	out      chan<- *message
	stats    *Stats
	log      *slog.Logger
	cur      *reader
	retiring []*retired
}

type retired struct {
	r     *reader
	quiet time.Time // when the file last grew
}

// open opens path and returns a reader at offset off (0 unless resuming).
func openReader(path string, want *fileState) (*reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot stat %q: %w", path, err)
	}
	id, _ := idOf(fi)
	r := &reader{path: path, f: f, id: id, key: id.key()}
	if want != nil {
		if fp, err := fingerprint(f, true); err == nil && fp == want.FP && want.Offset <= fi.Size() {
			if _, err := f.Seek(want.Offset, 0); err == nil {
				r.off, r.fp, r.gen, r.plan = want.Offset, want.FP, want.Gen, want.Planned
			}
		}
	}
	return r, nil
}

// findByID looks in dir for the file with identity id (a rotated file).
func findByID(dir string, id fileID) string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if got, ok := idOf(fi); ok && got == id {
			return filepath.Join(dir, e.Name())
		}
	}
	return ""
}

// resume opens the files saved state points at: the file path names now (from
// its saved offset when its identity matches) and files rotated away from
// path that were not drained (found by inode in the same directory). It
// returns the states that still apply.
func (fl *follower) resume(saved []*fileState) []*fileState {
	var keep []*fileState
	var cur fileID
	if fi, err := os.Stat(fl.path); err == nil {
		cur, _ = idOf(fi)
	}
	for _, s := range saved {
		id := fileID{s.Dev, s.Ino}
		if id == cur {
			continue
		}
		p := findByID(filepath.Dir(fl.path), id)
		if p == "" {
			fl.log.Warn("rotated file not found, its unshipped rest is lost", "path", fl.path, "offset", s.Offset)
			continue
		}
		r, err := openReader(p, s)
		if err != nil || r.id != id || r.off != s.Offset || r.fp != s.FP {
			if r != nil {
				r.f.Close()
			}
			fl.log.Warn("rotated file changed, its unshipped rest is lost", "path", p, "offset", s.Offset)
			continue
		}
		s.Retired = true
		keep = append(keep, s)
		fl.retiring = append(fl.retiring, &retired{r: r, quiet: time.Now()})
	}
	r, err := openReader(fl.path, nil)
	if err != nil {
		return keep
	}
	for _, s := range saved {
		if (fileID{s.Dev, s.Ino}) == r.id {
			r.f.Close()
			r, err = openReader(fl.path, s)
			if err != nil {
				return keep
			}
			if r.off == s.Offset && r.fp == s.FP {
				keep = append(keep, s)
			}
		}
	}
	fl.cur = r
	return keep
}

// run reads until the inputs end (not following) or ctx is done.
func (fl *follower) run(ctx context.Context) error {
	defer func() {
		for _, rt := range fl.retiring {
			rt.r.f.Close()
		}
		if fl.cur != nil {
			fl.cur.f.Close()
		}
	}()
	if fl.cur == nil {
		r, err := openReader(fl.path, nil)
		switch {
		case err == nil:
			fl.cur = r
		case !fl.cfg.Follow || !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("cannot open %q: %w", fl.path, err)
		default:
			fl.log.Info("waiting for file", "path", fl.path)
		}
	}
	t := time.NewTicker(fl.cfg.Poll)
	defer t.Stop()
	for {
		for i := 0; i < len(fl.retiring); i++ {
			rt := fl.retiring[i]
			if err := fl.pump(ctx, rt.r, !fl.cfg.Follow); err != nil {
				return err
			}
			if !fl.cfg.Follow {
				continue
			}
			if rt.r.grown {
				rt.r.grown, rt.quiet = false, time.Now()
			} else if time.Since(rt.quiet) >= fl.cfg.RotateWait {
				// Drained: nobody wrote to it for RotateWait.
				if err := fl.pump(ctx, rt.r, true); err != nil {
					return err
				}
				rt.r.f.Close()
				if !fl.send(ctx, &message{key: rt.r.key, done: true}) {
					return nil
				}
				fl.retiring = append(fl.retiring[:i], fl.retiring[i+1:]...)
				i--
			}
		}
		if fl.cur != nil {
			if err := fl.pump(ctx, fl.cur, !fl.cfg.Follow); err != nil {
				return err
			}
		}
		if !fl.cfg.Follow {
			return nil
		}
		if err := fl.check(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// check detects rotation (path names another file) and truncation (the file
// is shorter than what was read, or its first line changed) of the current file.
func (fl *follower) check() error {
	fi, err := os.Stat(fl.path)
	if err != nil {
		return nil // gone for now: keep reading the open file; rotation completes when a new one appears
	}
	id, _ := idOf(fi)
	r := fl.cur
	if r == nil || id != r.id {
		nr, err := openReader(fl.path, nil)
		if err != nil {
			return nil
		}
		if r != nil {
			fl.retiring = append(fl.retiring, &retired{r: r, quiet: time.Now()})
			fl.stats.Rotations.Add(1)
			fl.log.Info("file rotated", "path", fl.path)
		}
		fl.cur = nr
		return nil
	}
	if fi.Size() < r.pos() {
		fl.truncated(r)
		return r.reset()
	}
	return nil
}

// rewritten reports whether r's file no longer starts with the line r.fp
// was computed from (it was truncated and written again), counting it.
func (fl *follower) rewritten(r *reader) (bool, error) {
	fp, err := fingerprint(r.f, true)
	if err != nil {
		return false, err
	}
	if fp == r.fp {
		return false, nil
	}
	fl.truncated(r)
	return true, nil
}

func (fl *follower) truncated(r *reader) {
	fl.stats.Truncations.Add(1)
	fl.log.Info("file truncated, reading from its start", "path", r.path, "offset", r.pos())
}

// pump reads r to its end and sends every message that is ready.
func (fl *follower) pump(ctx context.Context, r *reader, final bool) error {
	for {
		read, err := r.fill(len(r.buf) + readChunk)
		if err != nil {
			return err
		}
		if read && r.fp != "" && !r.stdin {
			// The data just read belongs to the file whose first line is
			// r.fp only if that line is still there: a file truncated and
			// rewritten past our offset between two polls is read afresh.
			if changed, err := fl.rewritten(r); err != nil || changed {
				if err == nil {
					err = r.reset()
				}
				if err != nil {
					return err
				}
				continue
			}
		}
		if r.fp == "" && !r.stdin {
			fp, err := fingerprint(r.f, final && r.eof)
			if err != nil {
				return err
			}
			if fp == "" {
				if r.eof {
					return nil
				}
				continue
			}
			r.fp = fp
		}
		for {
			start, skipping := r.off, r.skip
			data, lines, end, trunc, ok := r.next(fl.cut, final && r.eof, !r.eof && !r.stdin)
			if !ok {
				if skipping && !r.skip {
					continue // the rest of an over-long line was dropped
				}
				break
			}
			m := &message{key: r.key, path: r.path, id: r.id, fp: r.fp, gen: r.gen, start: start, end: end,
				lines: lines, data: data, stdin: r.stdin, trunc: trunc}
			if !fl.send(ctx, m) {
				return nil
			}
		}
		if r.eof {
			return nil
		}
	}
}

func (fl *follower) send(ctx context.Context, m *message) bool {
	select {
	case fl.out <- m:
		return true
	case <-ctx.Done():
		return false
	}
}
