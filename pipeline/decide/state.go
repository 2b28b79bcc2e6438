package decide

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// An engine's state travels with the device records in checkpoints (package
// checkpoint), so that a restart neither alerts again within a cool-down nor
// forgets a block and its strikes: AppendState saves it, LoadState restores
// it, into the engine of the worker that owns each device now (the worker
// count may differ from the run that saved it).
//
// Snapshot format, version 2, little-endian:
//
//	version u32 | latest (the engine's clock) i64 | checked (last pruning) i64
//	cool-downs: count u32, each: device u64 | cause u64 | group u64 | first event u64 | severity rank u8 |
//	            spans u8 | spans × (lo i64 | hi i64)
//	blocks: count u32, each: scope key length u16 | scope key | device u64 | expires i64 | strikes u32
//	blocked devices: count u32, each: device u64 | until i64
//
// Entries are sorted (by key), so the same state gives the same bytes.
//
// Version 1 had no group, first event and severity, and keyed a cool-down by
// reason and severity (this build by reason alone): it is read, and its
// cool-downs then do not match this build's (a restored engine may alert
// once more within a cool-down).

// stateVersion is the version of the snapshot AppendState writes;
// stateVersionNoGroups is the previous one, still read.
const (
	stateVersion         = 2
	stateVersionNoGroups = 1
)

// maxScopeKey bounds a block's scope key in a snapshot.
const maxScopeKey = math.MaxUint16

// AppendState appends a snapshot of e's cool-downs, blocks with their strikes
// and expiry, blocked devices and clock to dst. The limiter (shared by all
// engines, per event-time minute) is not part of it.
func (e *Engine) AppendState(dst []byte) []byte {
	le := binary.LittleEndian
	dst = le.AppendUint32(dst, stateVersion)
	dst = le.AppendUint64(dst, uint64(e.latest))
	dst = le.AppendUint64(dst, uint64(e.checked))

	keys := make([]coolKey, 0, len(e.cooled))
	for k := range e.cooled {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b coolKey) int {
		return cmp.Or(cmp.Compare(a.device, b.device), cmp.Compare(a.cause, b.cause))
	})
	dst = le.AppendUint32(dst, uint32(len(keys)))
	for _, k := range keys {
		c := e.cooled[k]
		dst = le.AppendUint64(dst, k.device)
		dst = le.AppendUint64(dst, k.cause)
		dst = le.AppendUint64(dst, c.group)
		dst = le.AppendUint64(dst, c.first)
		dst = append(dst, c.sev, c.n)
		for _, s := range c.spans[:c.n] {
			dst = le.AppendUint64(dst, uint64(s.lo))
			dst = le.AppendUint64(dst, uint64(s.hi))
		}
	}

	scopes := make([]string, 0, len(e.blocks))
	for k := range e.blocks {
		if len(k) <= maxScopeKey {
			scopes = append(scopes, k)
		}
	}
	slices.Sort(scopes)
	dst = le.AppendUint32(dst, uint32(len(scopes)))
	for _, k := range scopes {
		b := e.blocks[k]
		dst = le.AppendUint16(dst, uint16(len(k)))
		dst = append(dst, k...)
		dst = le.AppendUint64(dst, b.device)
		dst = le.AppendUint64(dst, uint64(b.expires))
		dst = le.AppendUint32(dst, uint32(min(b.strikes, math.MaxUint32)))
	}

	devices := make([]uint64, 0, len(e.blocked))
	for d := range e.blocked {
		devices = append(devices, d)
	}
	slices.Sort(devices)
	dst = le.AppendUint32(dst, uint32(len(devices)))
	for _, d := range devices {
		dst = le.AppendUint64(dst, d)
		dst = le.AppendUint64(dst, uint64(e.blocked[d]))
	}
	return dst
}

// errShortState reports a snapshot that ends early.
var errShortState = errors.New("snapshot ends early")

// LoadState merges a snapshot written by AppendState into e, keeping only
// the entries of the devices owns reports true for (nil: all of them): how
// the engines of a run with another worker count are re-sharded, each
// snapshot loaded into every engine with the ownership test of its worker.
// Merged entries combine: cool-down spans are united, a block keeps the later
// expiry and the most strikes, a blocked device the later expiry; the clock
// is the later one. On an error (a corrupt snapshot or another version) e
// may hold part of the snapshot: the caller should replace it with a fresh
// engine.
func (e *Engine) LoadState(b []byte, owns func(device uint64) bool) error {
	r := stateReader{b: b}
	v := r.u32()
	if r.err == nil && v != stateVersion && v != stateVersionNoGroups {
		return fmt.Errorf("cannot load decision state: version %d, this build reads %d and %d", v, stateVersion, stateVersionNoGroups)
	}
	latest, checked := int64(r.u64()), int64(r.u64())
	if r.err != nil {
		return fmt.Errorf("cannot load decision state: %w", r.err)
	}
	mine := func(d uint64) bool { return owns == nil || owns(d) }
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		k := coolKey{device: r.u64(), cause: r.u64()}
		var group, first uint64
		var sev uint8
		if v == stateVersion {
			group, first, sev = r.u64(), r.u64(), r.u8()
		}
		spans := int(r.u8())
		if spans > maxCoverSpans {
			return fmt.Errorf("cannot load decision state: a cool-down of %d spans (at most %d)", spans, maxCoverSpans)
		}
		c := e.cooled[k]
		for range spans {
			lo, hi := int64(r.u64()), int64(r.u64())
			if r.err == nil && mine(k.device) {
				c.addSpan(lo, hi)
			}
		}
		if r.err == nil && mine(k.device) && c.n > 0 {
			if sev >= c.sev {
				c.group, c.first, c.sev = group, first, sev
			}
			e.cooled[k] = c
		}
	}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		key := string(r.bytes(int(r.u16())))
		nb := block{device: r.u64(), expires: int64(r.u64()), strikes: int(r.u32())}
		if r.err != nil || !mine(nb.device) {
			continue
		}
		if old, ok := e.blocks[key]; ok {
			if old.expires > nb.expires {
				nb.expires, nb.device = old.expires, old.device
			}
			nb.strikes = max(nb.strikes, old.strikes)
		}
		e.blocks[strings.Clone(key)] = nb
	}
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		d, until := r.u64(), int64(r.u64())
		if r.err == nil && mine(d) {
			if old, ok := e.blocked[d]; !ok || until > old {
				e.blocked[d] = until
			}
		}
	}
	if r.err != nil {
		return fmt.Errorf("cannot load decision state: %w", r.err)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("cannot load decision state: %d bytes after its end", len(r.b))
	}
	e.latest, e.checked = max(e.latest, latest), max(e.checked, checked)
	return nil
}

// Reset forgets every cool-down, block and blocked device and the engine's
// clock: the engine is as NewEngine returned it.
func (e *Engine) Reset() {
	clear(e.cooled)
	clear(e.blocks)
	clear(e.blocked)
	e.checked, e.latest = 0, math.MinInt64
}

// stateReader reads a snapshot; the first short read sets err and every
// later read returns zero.
type stateReader struct {
	b   []byte
	err error
}

func (r *stateReader) bytes(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShortState
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *stateReader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *stateReader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *stateReader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *stateReader) u64() uint64 {
	if b := r.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}
