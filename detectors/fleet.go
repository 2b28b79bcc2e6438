package detectors

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClassTable is the shared, bounded table of class identity behind every
// Fleet view: per class, a 1024-bit sketch of its devices and the earliest
// event time learned. Distinct devices are estimated by linear counting
// (accurate to a few percent up to ~3,000 devices, saturating beyond). The
// table is fixed-size and open-addressed, so memory does not grow with
// devices. Workers call Learn for every event (ClassModel.Learn); detectors
// only read through Fleet.
//
// Every class is also learned as its model, the class across tenants
// (Event.ModelKey), so that a tenant's class too young or too small to know
// something can ask its model (the locks of one tenant unlock during the
// day; a tenant whose night it is has not seen it yet).
//
// What detectors learn of a class (commands, countries, rates) is theirs:
// their ClassStats, in their packages, sized by CommandSlots and ClassSlots.
//
// When the table is full, new classes are not learned (Saturated counts
// them).
type ClassTable struct {
	clsKeys      []atomic.Uint64
	clsBits      []atomic.Uint64 // clsWords per class slot
	clsFirst     []atomic.Uint64 // per class slot: earliest event time learned, Unix ns (0: none)
	commandSlots int
	saturated    atomic.Uint64
	// overlay is the other instances' classes (MergeFrom, SetOverlay): nil
	// when the model is not merged.
	overlay atomic.Pointer[ClassTable]
}

const clsWords = 16 // 1024 bits per class

// NewClassTable returns a table of classSlots classes (and models), rounded up
// to a power of two (TableSize); it costs 144 bytes per class slot.
// commandSlots is not the table's: it sizes the detectors' per-command
// statistics (CommandSlots).
func NewClassTable(commandSlots, classSlots int) *ClassTable {
	k := TableSize(classSlots)
	return &ClassTable{
		clsKeys: make([]atomic.Uint64, k), clsBits: make([]atomic.Uint64, k*clsWords),
		clsFirst: make([]atomic.Uint64, k), commandSlots: TableSize(commandSlots),
	}
}

// CommandSlots is how many (class, command) keys a detector's class
// statistics should hold (a power of two).
func (t *ClassTable) CommandSlots() int { return t.commandSlots }

// ClassSlots is how many classes the table holds (a power of two); a
// detector's per-class statistics should hold as many.
func (t *ClassTable) ClassSlots() int { return len(t.clsKeys) }

// deviceBit10 is the device's bit in a class sketch.
func deviceBit10(device uint64) uint { return uint(device >> 54) }

// ClassSince implements Fleet.
// With an overlay, it is the earlier of this instance's and the others'.
func (t *ClassTable) ClassSince(class uint64) int64 {
	since := int64(0)
	if j := Slot(t.clsKeys, class, false); j >= 0 {
		since = int64(t.clsFirst[j].Load())
	}
	if o := t.overlay.Load(); o != nil {
		if j := Slot(o.clsKeys, class, false); j >= 0 {
			if f := int64(o.clsFirst[j].Load()); f != 0 && (since == 0 || f < since) {
				since = f
			}
		}
	}
	return since
}

// ClassDevices implements Fleet. With an overlay, it counts the union of
// this instance's devices of the class and the others' (the sketches OR).
func (t *ClassTable) ClassDevices(class uint64) float64 {
	j := Slot(t.clsKeys, class, false)
	o := t.overlay.Load()
	k := -1
	if o != nil {
		k = Slot(o.clsKeys, class, false)
	}
	var ones int
	switch {
	case j < 0 && k < 0:
		return 0
	case k < 0: // the common case: no overlay, or a class only this instance knows
		mine := t.clsBits[j*clsWords:][:clsWords]
		for i := range mine {
			ones += bits.OnesCount64(mine[i].Load())
		}
	case j < 0:
		theirs := o.clsBits[k*clsWords:][:clsWords]
		for i := range theirs {
			ones += bits.OnesCount64(theirs[i].Load())
		}
	default:
		mine, theirs := t.clsBits[j*clsWords:][:clsWords], o.clsBits[k*clsWords:][:clsWords]
		for i := range mine {
			ones += bits.OnesCount64(mine[i].Load() | theirs[i].Load())
		}
	}
	return LinearCount(clsWords*64, ones)
}

// MergeFrom adds other's own classes (a table of the same size, another
// instance's contribution) to t's: device sketches OR, the earliest event
// time is the minimum. It is for an accumulator no worker uses
// (ClassModel.Merge); classes that find t full are counted in Saturated.
func (t *ClassTable) MergeFrom(other *ClassTable) {
	for i := range other.clsKeys {
		key := other.clsKeys[i].Load()
		if key == 0 {
			continue
		}
		j := Slot(t.clsKeys, key, true)
		if j < 0 {
			t.saturated.Add(1)
			continue
		}
		for w := range clsWords {
			if b := other.clsBits[i*clsWords+w].Load(); b != 0 {
				t.clsBits[j*clsWords+w].Or(b)
			}
		}
		KeepEarliest(&t.clsFirst[j], int64(other.clsFirst[i].Load()))
	}
}

// SetOverlay makes o (filled by MergeFrom, never written after) the other
// instances' classes that ClassDevices and ClassSince add to t's own; nil
// removes them. What t learns and snapshots stays its own.
func (t *ClassTable) SetOverlay(o *ClassTable) { t.overlay.Store(o) }

// Learn records that ev's device belongs to its class and, when ev has one,
// to its model, and ev's time. Safe for concurrent use; after warm-up it only
// reads (bits already set). It does not allocate.
func (t *ClassTable) Learn(ev *schemas.Event) {
	t.learnClass(ev.ClassKey, ev)
	if ev.HasModel() {
		t.learnClass(ev.ModelKey, ev)
	}
}

// learnClass records ev's device and time in class key's slot.
func (t *ClassTable) learnClass(key uint64, ev *schemas.Event) {
	j := Slot(t.clsKeys, key, true)
	if j < 0 {
		t.saturated.Add(1)
		return
	}
	b := deviceBit10(ev.DeviceKey)
	SetBit(&t.clsBits[j*clsWords+int(b>>6)], b&63)
	KeepEarliest(&t.clsFirst[j], ev.Time)
}

// Saturated returns how many learn calls found the table full.
func (t *ClassTable) Saturated() uint64 { return t.saturated.Load() }

// snapshotVersion versions ClassTable's snapshot encoding. Versions 1 to 5
// also held what detectors learn of classes (commands, transitions,
// countries, ASNs, rates, argument ranges, daily cycles); from 6 on each
// detector snapshots its own (ClassStats), and older versions are refused.
const snapshotVersion = 6

func (t *ClassTable) arrays() [][]atomic.Uint64 {
	return [][]atomic.Uint64{t.clsKeys, t.clsBits, t.clsFirst}
}

// AppendSnapshot appends the table's contents to dst: a version, the slot
// count, then the arrays as little-endian words. Concurrent Learn calls may
// or may not be included; take it while workers are stopped for an exact
// copy.
func (t *ClassTable) AppendSnapshot(dst []byte) []byte {
	dst = AppendStatsHeader(dst, snapshotVersion, len(t.clsKeys))
	return AppendWords(dst, t.arrays()...)
}

// LoadSnapshot replaces the table's contents with a snapshot taken by
// AppendSnapshot from a table of the same size. On error the table is
// unchanged.
func (t *ClassTable) LoadSnapshot(b []byte) error {
	if len(b) >= 4 {
		if v := binary.LittleEndian.Uint32(b); v < snapshotVersion {
			return fmt.Errorf("cannot load class snapshot: version %d holds detectors' statistics, this build reads %d", v, snapshotVersion)
		}
	}
	rest, err := ReadStatsHeader(b, "class snapshot", snapshotVersion, len(t.clsKeys))
	if err != nil {
		return err
	}
	if err := LoadWords(rest, t.arrays()...); err != nil {
		return fmt.Errorf("cannot load class snapshot: %w", err)
	}
	return nil
}
