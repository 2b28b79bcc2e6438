package detectors

import (
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClassTable is the shared, bounded implementation of Fleet. It keeps, per
// (class, command), a 64-bit sketch of the devices that issued it and, per
// class, a 1024-bit sketch of its devices; distinct counts are estimated by
// linear counting (accurate to a few percent up to ~100 devices for a command
// and ~3,000 for a class, saturating beyond). Tables are fixed-size and
// open-addressed, so memory does not grow with devices or commands. Workers call
// Learn for every event; detectors only read through Fleet.
//
// When a table is full, new keys are not learned (Saturated counts them): an
// unknown command then keeps looking new, which errs on the side of alerting.
type ClassTable struct {
	cmdKeys   []atomic.Uint64
	cmdBits   []atomic.Uint64
	clsKeys   []atomic.Uint64
	clsBits   []atomic.Uint64 // clsWords per class slot
	saturated atomic.Uint64
}

const clsWords = 16 // 1024 bits per class

// NewClassTable returns a table holding up to commandSlots (class, command)
// pairs and classSlots classes; both are rounded up to powers of two. It costs
// 16 bytes per command slot and 136 bytes per class slot.
func NewClassTable(commandSlots, classSlots int) *ClassTable {
	c, k := pow2(commandSlots), pow2(classSlots)
	return &ClassTable{
		cmdKeys: make([]atomic.Uint64, c), cmdBits: make([]atomic.Uint64, c),
		clsKeys: make([]atomic.Uint64, k), clsBits: make([]atomic.Uint64, k*clsWords),
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

// deviceBit is the device's bit in a 64-bit command sketch; deviceBit10 its bit
// in a class sketch. They use the key's top bits (the shard uses bits 32-63
// too, but every worker sees every bit value).
func deviceBit(device uint64) uint   { return uint(device >> 58) }
func deviceBit10(device uint64) uint { return uint(device >> 54) }

// linearCount estimates distinct items from a bitmap of m bits with ones set.
func linearCount(m, ones int) float64 {
	zeros := m - ones
	if zeros <= 0 {
		zeros = 1 // saturated: the estimator's ceiling, m·ln m
	}
	return float64(m) * math.Log(float64(m)/float64(zeros))
}

// ClassCommandDevices implements Fleet.
func (t *ClassTable) ClassCommandDevices(class, command, device uint64) float64 {
	j := slot(t.cmdKeys, pairKey(class, command), false)
	if j < 0 {
		return 0
	}
	b := t.cmdBits[j].Load() &^ (1 << deviceBit(device))
	return linearCount(64, bits.OnesCount64(b))
}

// ClassDevices implements Fleet.
func (t *ClassTable) ClassDevices(class uint64) float64 {
	j := slot(t.clsKeys, class, false)
	if j < 0 {
		return 0
	}
	ones := 0
	for i := j * clsWords; i < (j+1)*clsWords; i++ {
		ones += bits.OnesCount64(t.clsBits[i].Load())
	}
	return linearCount(clsWords*64, ones)
}

// Learn records that ev's device belongs to its class and issued ev's command.
// Safe for concurrent use; after warm-up it only reads (bits already set).
func (t *ClassTable) Learn(ev *schemas.Event) {
	if j := slot(t.clsKeys, ev.ClassKey, true); j >= 0 {
		b := deviceBit10(ev.DeviceKey)
		setBit(&t.clsBits[j*clsWords+int(b>>6)], b&63)
	} else {
		t.saturated.Add(1)
	}
	if j := slot(t.cmdKeys, pairKey(ev.ClassKey, ev.CommandID), true); j >= 0 {
		setBit(&t.cmdBits[j], deviceBit(ev.DeviceKey))
	} else {
		t.saturated.Add(1)
	}
}

func setBit(w *atomic.Uint64, bit uint) {
	if m := uint64(1) << bit; w.Load()&m == 0 {
		w.Or(m)
	}
}

// Saturated returns how many learn calls found their table full.
func (t *ClassTable) Saturated() uint64 { return t.saturated.Load() }
