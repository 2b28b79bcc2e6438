package detectors

import (
	"sync/atomic"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClassTable is the shared, bounded implementation of Fleet: class-level counts
// kept in fixed-size open-addressed tables of atomics, so its memory does not grow
// with the number of devices or commands. Workers call Learn after scoring an
// event that was not flagged; detectors only read it through Fleet.
//
// When a table is full, new keys are not learned (Saturated counts them): an
// unknown command then keeps looking new, which errs on the side of alerting.
type ClassTable struct {
	cmdKeys   []atomic.Uint64
	cmdCounts []atomic.Uint32
	clsKeys   []atomic.Uint64
	clsCounts []atomic.Uint64
	saturated atomic.Uint64
}

// NewClassTable returns a table holding up to commandSlots (class, command)
// pairs and classSlots classes; both are rounded up to powers of two.
func NewClassTable(commandSlots, classSlots int) *ClassTable {
	c, k := pow2(commandSlots), pow2(classSlots)
	return &ClassTable{
		cmdKeys: make([]atomic.Uint64, c), cmdCounts: make([]atomic.Uint32, c),
		clsKeys: make([]atomic.Uint64, k), clsCounts: make([]atomic.Uint64, k),
	}
}

func pow2(n int) int {
	p := 1024
	for p < n {
		p <<= 1
	}
	return p
}

// maxProbe bounds linear probing; a key not found within it is absent.
const maxProbe = 64

// slot finds key's slot, claiming an empty one when insert is set; -1 if absent or full.
func slot(keys []atomic.Uint64, key uint64, insert bool) int {
	if key == 0 {
		key = 1 // 0 marks an empty slot
	}
	mask := uint64(len(keys) - 1)
	for i := uint64(0); i < maxProbe; i++ {
		j := (key + i) & mask
		k := keys[j].Load()
		if k == key {
			return int(j)
		}
		if k == 0 {
			if !insert {
				return -1
			}
			if keys[j].CompareAndSwap(0, key) || keys[j].Load() == key {
				return int(j)
			}
		}
	}
	return -1
}

func pairKey(class, command uint64) uint64 {
	return (class ^ (command * 0x9e3779b97f4a7c15)) * 0xff51afd7ed558ccd
}

// ClassCommandCount implements Fleet.
func (t *ClassTable) ClassCommandCount(class, command uint64) uint32 {
	if j := slot(t.cmdKeys, pairKey(class, command), false); j >= 0 {
		return t.cmdCounts[j].Load()
	}
	return 0
}

// ClassEvents implements Fleet.
func (t *ClassTable) ClassEvents(class uint64) uint64 {
	if j := slot(t.clsKeys, class, false); j >= 0 {
		return t.clsCounts[j].Load()
	}
	return 0
}

// Learn records an unflagged event of ev's class. Safe for concurrent use.
func (t *ClassTable) Learn(ev *schemas.Event) {
	if j := slot(t.clsKeys, ev.ClassKey, true); j >= 0 {
		t.clsCounts[j].Add(1)
	} else {
		t.saturated.Add(1)
	}
	if j := slot(t.cmdKeys, pairKey(ev.ClassKey, ev.CommandID), true); j >= 0 {
		if t.cmdCounts[j].Load() < ^uint32(0) {
			t.cmdCounts[j].Add(1)
		}
	} else {
		t.saturated.Add(1)
	}
}

// Saturated returns how many learn calls found their table full.
func (t *ClassTable) Saturated() uint64 { return t.saturated.Load() }
