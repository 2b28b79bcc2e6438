package command

import (
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
)

// adoptions counts, per (class, command) key, the distinct devices that
// adopted the command recently: issued it for the first time, as established
// devices, from their home networks (see adopting). Each slot holds a 64-bit
// device sketch for the current AdoptWindow and one for the previous, and the
// current window's index, so a count covers the last one to two windows. It
// is fixed-size (32 bytes per slot) and safe for concurrent use; two writers
// rotating one slot at once may lose a few bits, which only makes a rollout
// look narrower than it is.
type adoptions struct {
	keys      []atomic.Uint64
	cur, prev []atomic.Uint64
	win       []atomic.Uint64 // the window cur belongs to, event time / AdoptWindow
	saturated atomic.Uint64
	// overlay is the other instances' adoptions (mergeFrom), nil when not
	// merged: devices ORs its window masks with the local ones.
	overlay atomic.Pointer[adoptions]
}

func newAdoptions(slots int) *adoptions {
	n := detectors.TableSize(slots)
	return &adoptions{keys: make([]atomic.Uint64, n), cur: make([]atomic.Uint64, n),
		prev: make([]atomic.Uint64, n), win: make([]atomic.Uint64, n)}
}

// adoptWindow is the AdoptWindow index of event time t (Unix ns).
func adoptWindow(t int64) uint64 { return uint64(max(t, 0) / (AdoptWindow * 1e9)) }

// learn records that device adopted key's command at event time t. An
// adoption older than the previous window is dropped. It does not allocate.
func (a *adoptions) learn(key, device uint64, t int64) {
	j := detectors.Slot(a.keys, key, true)
	if j < 0 {
		a.saturated.Add(1)
		return
	}
	w := adoptWindow(t)
	for {
		old := a.win[j].Load()
		if w <= old {
			break
		}
		if a.win[j].CompareAndSwap(old, w) {
			if w == old+1 {
				a.prev[j].Store(a.cur[j].Swap(0))
			} else {
				a.prev[j].Store(0)
				a.cur[j].Store(0)
			}
			break
		}
	}
	switch old := a.win[j].Load(); {
	case w == old:
		detectors.SetBit(&a.cur[j], detectors.DeviceBit(device))
	case w+1 == old:
		detectors.SetBit(&a.prev[j], detectors.DeviceBit(device))
	}
}

// devices estimates how many distinct devices other than device adopted
// key's command in the window of t and the one before; 0 when none. It does
// not allocate.
// With an overlay, the other instances' adopters of the same windows are
// counted too.
func (a *adoptions) devices(key, device uint64, t int64) float64 {
	m, found := a.mask(key, t)
	if o := a.overlay.Load(); o != nil {
		om, ofound := o.mask(key, t)
		m, found = m|om, found || ofound
	}
	if !found {
		return 0
	}
	m &^= 1 << detectors.DeviceBit(device)
	return detectors.LinearCount(64, bits.OnesCount64(m))
}

// mask returns the sketch of key's adopters in the window of t and the one
// before, and whether key has a slot.
func (a *adoptions) mask(key uint64, t int64) (uint64, bool) {
	j := detectors.Slot(a.keys, key, false)
	if j < 0 {
		return 0, false
	}
	var m uint64
	switch w, old := adoptWindow(t), a.win[j].Load(); {
	case w == old:
		m = a.cur[j].Load() | a.prev[j].Load()
	case w == old+1:
		m = a.cur[j].Load()
	case w+1 == old: // a late event: the windows it saw
		m = a.prev[j].Load()
	}
	return m, true
}

// mergeFrom adds other's adoptions (another instance's) to a, an
// accumulator no worker uses: per key the windows align on the later of the
// two (a window that falls out of the pair is dropped, as learn drops it),
// and the sketches of one window OR.
func (a *adoptions) mergeFrom(other *adoptions) {
	for i := range other.keys {
		key := other.keys[i].Load()
		if key == 0 {
			continue
		}
		j := detectors.Slot(a.keys, key, true)
		if j < 0 {
			a.saturated.Add(1)
			continue
		}
		ow, ocur, oprev := other.win[i].Load(), other.cur[i].Load(), other.prev[i].Load()
		switch w := a.win[j].Load(); {
		case ow == w:
			a.cur[j].Or(ocur)
			a.prev[j].Or(oprev)
		case ow == w+1:
			a.prev[j].Store(a.cur[j].Load() | oprev)
			a.cur[j].Store(ocur)
			a.win[j].Store(ow)
		case ow > w+1:
			a.prev[j].Store(oprev)
			a.cur[j].Store(ocur)
			a.win[j].Store(ow)
		case ow+1 == w:
			a.prev[j].Or(ocur)
		}
	}
}

func (a *adoptions) arrays() [][]atomic.Uint64 {
	return [][]atomic.Uint64{a.keys, a.cur, a.prev, a.win}
}
