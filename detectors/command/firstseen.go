package command

import (
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
)

// firstSeen holds, per key (a class's command or transition), the earliest
// event time (Unix ns) at which any device of the class was learned with it.
// It makes the class's novelty judgements depend on event time rather than
// on the order events were processed in: a scorer behind in event time (a
// takeover's catch-up, a partition at its own pace) reads a class that
// already learned other devices' later events, and those must not make a
// command look known at an earlier time. It is fixed-size (16 bytes per
// slot), merges across instances and snapshots by minimum, and is safe for
// concurrent use. 0 is "none": events at or before the epoch are not
// recorded, and a key with no time is judged by its devices alone.
type firstSeen struct {
	keys, times []atomic.Uint64
	saturated   atomic.Uint64
	// overlay is the other instances' times (mergeFrom), nil when not
	// merged: first takes the earlier of the local and the overlay's.
	overlay atomic.Pointer[firstSeen]
}

func newFirstSeen(slots int) *firstSeen {
	n := detectors.TableSize(slots)
	return &firstSeen{keys: make([]atomic.Uint64, n), times: make([]atomic.Uint64, n)}
}

// learn records key at event time t (kept when earlier than what key
// holds). It does not allocate.
func (f *firstSeen) learn(key uint64, t int64) {
	if t <= 0 {
		return
	}
	j := detectors.Slot(f.keys, key, true)
	if j < 0 {
		f.saturated.Add(1)
		return
	}
	detectors.KeepEarliest(&f.times[j], t)
}

// first returns the earliest event time key was learned at, here or in the
// overlay; 0 when none. It does not allocate.
func (f *firstSeen) first(key uint64) int64 {
	var t uint64
	if j := detectors.Slot(f.keys, key, false); j >= 0 {
		t = f.times[j].Load()
	}
	if o := f.overlay.Load(); o != nil {
		if j := detectors.Slot(o.keys, key, false); j >= 0 {
			if ot := o.times[j].Load(); ot != 0 && (t == 0 || ot < t) {
				t = ot
			}
		}
	}
	return int64(t)
}

// learnedAfter reports whether key's earliest time is known and not before
// t: every device the class learned with key issued it at t or later, so at
// t the key was new to the class (an equal time is the device itself, or a
// device that issued it at the same instant).
func (f *firstSeen) learnedAfter(key uint64, t int64) bool {
	first := f.first(key)
	return first != 0 && first >= t
}

// mergeFrom lowers f's times to other's (another instance's own), for an
// accumulator no worker uses.
func (f *firstSeen) mergeFrom(other *firstSeen) {
	for i := range other.keys {
		key := other.keys[i].Load()
		t := other.times[i].Load()
		if key == 0 || t == 0 {
			continue
		}
		j := detectors.Slot(f.keys, key, true)
		if j < 0 {
			f.saturated.Add(1)
			continue
		}
		detectors.KeepEarliest(&f.times[j], int64(t))
	}
}

func (f *firstSeen) arrays() [][]atomic.Uint64 { return [][]atomic.Uint64{f.keys, f.times} }
