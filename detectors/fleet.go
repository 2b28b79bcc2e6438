package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClassTable is the shared, bounded implementation of Fleet. It keeps, per
// (class, command) and per (class, previous command, command) transition, a
// 64-bit sketch of the devices that issued it and, per class, a 1024-bit
// sketch of its devices and the earliest event time learned, and per (class,
// country) and (class, ASN) a 64-bit sketch of the devices seen there;
// distinct counts are estimated by
// linear counting (accurate to a few percent up to ~100 devices for a command
// and ~3,000 for a class, saturating beyond). Tables are fixed-size and
// open-addressed, so memory does not grow with devices or commands. Workers call
// Learn and LearnTransition for every event; detectors only read through Fleet.
//
// Every class is also learned as its model, the class across tenants
// (Event.ModelKey): its devices, commands and transitions, so that a
// tenant's class too young or too small to know a command can ask whether
// the model knows it (the locks of one tenant unlock during the day; a
// tenant whose night it is has not seen it yet).
//
// Per class it also samples 16 devices' request rates, whose median is the
// class's typical per-device rate (ClassRate, fleet_rate.go) and their daily
// cycle (ClassRamp, fleet_cycle.go), and per (class,
// command, argument) it learns the range of numeric command arguments
// (ClassParam, a ParamTable of as many slots as commands, params.go).
//
// When a table is full, new keys are not learned (Saturated counts them): an
// unknown command then keeps looking new, which errs on the side of alerting.
type ClassTable struct {
	cmdKeys  []atomic.Uint64
	cmdBits  []atomic.Uint64
	trKeys   []atomic.Uint64 // transitions, as many slots as commands
	trBits   []atomic.Uint64
	clsKeys  []atomic.Uint64
	clsBits  []atomic.Uint64 // clsWords per class slot
	clsFirst []atomic.Uint64 // per class slot: earliest event time learned, Unix ns (0: none)
	geoKeys  []atomic.Uint64 // (class, country) and (class, ASN): geoPerClass slots per class slot
	geoBits  []atomic.Uint64
	// rateSlots sampled devices per class slot (fleet_rate.go): key, last
	// event time (Unix ns), decayed count and exposure (float64 bits).
	rateKeys, rateLast, rateCount, rateExposure []atomic.Uint64
	// cycleBins hours per class slot (fleet_cycle.go): the sampled devices'
	// event count and exposure (float64 bits).
	cycleCount, cycleExposure []atomic.Uint64
	// Per class slot: the open hour (hours since the epoch + 1; 0: none)
	// and its sums, added to its bin when it closes.
	cycleHour, cycleOpenCount, cycleOpenExposure []atomic.Uint64
	params                                       *ParamTable
	saturated                                    atomic.Uint64
}

const (
	clsWords    = 16 // 1024 bits per class
	geoPerClass = 16 // (class, country) and (class, ASN) slots per class slot
)

// NewClassTable returns a table holding up to commandSlots (class, command)
// pairs, as many (class, previous command, command) transitions, and
// classSlots classes, with 16 (class, country or ASN) slots, 16 sampled
// device rates and a 24-hour cycle per class; both are rounded up to powers
// of two. It costs 72 bytes per command slot (40 of them for argument
// ranges) and 1,320 bytes per class slot.
func NewClassTable(commandSlots, classSlots int) *ClassTable {
	c, k := pow2(commandSlots), pow2(classSlots)
	return &ClassTable{
		cmdKeys: make([]atomic.Uint64, c), cmdBits: make([]atomic.Uint64, c),
		trKeys: make([]atomic.Uint64, c), trBits: make([]atomic.Uint64, c),
		clsKeys: make([]atomic.Uint64, k), clsBits: make([]atomic.Uint64, k*clsWords),
		clsFirst: make([]atomic.Uint64, k),
		geoKeys:  make([]atomic.Uint64, k*geoPerClass), geoBits: make([]atomic.Uint64, k*geoPerClass),
		rateKeys: make([]atomic.Uint64, k*rateSlots), rateLast: make([]atomic.Uint64, k*rateSlots),
		rateCount: make([]atomic.Uint64, k*rateSlots), rateExposure: make([]atomic.Uint64, k*rateSlots),
		cycleCount: make([]atomic.Uint64, k*cycleBins), cycleExposure: make([]atomic.Uint64, k*cycleBins),
		cycleHour: make([]atomic.Uint64, k), cycleOpenCount: make([]atomic.Uint64, k),
		cycleOpenExposure: make([]atomic.Uint64, k),
		params:            NewParamTable(c),
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

// transitionKey mixes differently from pairKey, so that a transition and a
// command never share a key by construction.
func transitionKey(class, prev, command uint64) uint64 {
	k := (prev*0xc2b2ae3d27d4eb4f ^ command) * 0x9e3779b97f4a7c15
	return (class ^ k ^ k>>29) * 0xd6e8feb86659fd93
}

// countryKey and asnKey place a country or an ASN of a class in the geo
// table; the tags keep countries and ASNs apart.
func countryKey(class uint64, c schemas.Country) uint64 {
	return pairKey(class, 0x434f0000_00000000|uint64(c[0])<<8|uint64(c[1]))
}

func asnKey(class uint64, asn uint32) uint64 {
	return pairKey(class, 0x41530000_00000000|uint64(asn))
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

// sketchDevices estimates how many distinct devices other than device are in
// key's 64-bit sketch (keys and sketches are one table's parallel arrays); 0
// when key is absent.
func sketchDevices(keys, sketches []atomic.Uint64, key, device uint64) float64 {
	j := slot(keys, key, false)
	if j < 0 {
		return 0
	}
	b := sketches[j].Load() &^ (1 << deviceBit(device))
	return linearCount(64, bits.OnesCount64(b))
}

// learnSketch sets device's bit in key's 64-bit sketch, claiming a slot for a
// new key; a full table counts in Saturated.
func (t *ClassTable) learnSketch(keys, sketches []atomic.Uint64, key, device uint64) {
	if j := slot(keys, key, true); j >= 0 {
		setBit(&sketches[j], deviceBit(device))
	} else {
		t.saturated.Add(1)
	}
}

// ClassCommandDevices implements Fleet.
func (t *ClassTable) ClassCommandDevices(class, command, device uint64) float64 {
	return sketchDevices(t.cmdKeys, t.cmdBits, pairKey(class, command), device)
}

// ClassTransitionDevices implements Fleet.
func (t *ClassTable) ClassTransitionDevices(class, prev, command, device uint64) float64 {
	return sketchDevices(t.trKeys, t.trBits, transitionKey(class, prev, command), device)
}

// ClassCountryDevices implements Fleet.
func (t *ClassTable) ClassCountryDevices(class uint64, country schemas.Country, device uint64) float64 {
	return sketchDevices(t.geoKeys, t.geoBits, countryKey(class, country), device)
}

// ClassASNDevices implements Fleet.
func (t *ClassTable) ClassASNDevices(class uint64, asn uint32, device uint64) float64 {
	return sketchDevices(t.geoKeys, t.geoBits, asnKey(class, asn), device)
}

// ClassSince implements Fleet.
func (t *ClassTable) ClassSince(class uint64) int64 {
	j := slot(t.clsKeys, class, false)
	if j < 0 {
		return 0
	}
	return int64(t.clsFirst[j].Load())
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

// Learn records that ev's device belongs to its class, issued ev's command and
// was seen in ev's country and ASN (when known), counts ev in the device's
// rate sample if it is one, and learns ev's numeric arguments (those in range).
// Safe for concurrent use; after warm-up it only reads (bits already set).
func (t *ClassTable) Learn(ev *schemas.Event) {
	if j := t.learnClass(ev.ClassKey, ev); j >= 0 {
		t.learnRate(j, ev)
	}
	t.learnSketch(t.cmdKeys, t.cmdBits, pairKey(ev.ClassKey, ev.CommandID), ev.DeviceKey)
	if ev.HasModel() {
		// The model across tenants: its devices and commands only.
		t.learnClass(ev.ModelKey, ev)
		t.learnSketch(t.cmdKeys, t.cmdBits, pairKey(ev.ModelKey, ev.CommandID), ev.DeviceKey)
	}
	if ev.Country.Known() {
		t.learnSketch(t.geoKeys, t.geoBits, countryKey(ev.ClassKey, ev.Country), ev.DeviceKey)
	}
	if ev.ASN != 0 {
		t.learnSketch(t.geoKeys, t.geoBits, asnKey(ev.ClassKey, ev.ASN), ev.DeviceKey)
	}
	t.params.Learn(ev)
}

// LearnTransition records that ev's device issued ev's command right after
// the command prev (an identifier kept by a CommandTracker; 0, no previous
// command, learns nothing). Safe for concurrent use.
func (t *ClassTable) LearnTransition(ev *schemas.Event, prev uint64) {
	if prev == 0 {
		return
	}
	t.learnSketch(t.trKeys, t.trBits, transitionKey(ev.ClassKey, prev, ev.CommandID), ev.DeviceKey)
	if ev.HasModel() {
		t.learnSketch(t.trKeys, t.trBits, transitionKey(ev.ModelKey, prev, ev.CommandID), ev.DeviceKey)
	}
}

// learnClass records ev's device and time in class key's slot and returns
// the slot, or -1 (counted in Saturated) when the table is full.
func (t *ClassTable) learnClass(key uint64, ev *schemas.Event) int {
	j := slot(t.clsKeys, key, true)
	if j < 0 {
		t.saturated.Add(1)
		return j
	}
	b := deviceBit10(ev.DeviceKey)
	setBit(&t.clsBits[j*clsWords+int(b>>6)], b&63)
	for f := &t.clsFirst[j]; ev.Time > 0; {
		old := f.Load()
		if (old != 0 && int64(old) <= ev.Time) || f.CompareAndSwap(old, uint64(ev.Time)) {
			break
		}
	}
	return j
}

func setBit(w *atomic.Uint64, bit uint) {
	if m := uint64(1) << bit; w.Load()&m == 0 {
		w.Or(m)
	}
}

// Saturated returns how many learn calls found their table full.
func (t *ClassTable) Saturated() uint64 { return t.saturated.Load() + t.params.Saturated() }

// ClassParam implements Fleet.
func (t *ClassTable) ClassParam(class, command, name uint64) ParamRange {
	return t.params.ClassParam(class, command, name)
}

// snapshotVersion versions ClassTable's snapshot encoding: 2 added the geo
// arrays, 3 the rate samples, 4 the argument ranges, 5 the daily cycles. A
// new version appends its arrays to snapshotLayout's list.
const snapshotVersion = 5

// snapshotLayout returns the arrays a snapshot of the given version holds, in
// order, or nil for an unknown version. Arrays a version lacks load empty.
func (t *ClassTable) snapshotLayout(version uint32) [][]atomic.Uint64 {
	base := [][]atomic.Uint64{t.cmdKeys, t.cmdBits, t.trKeys, t.trBits, t.clsKeys, t.clsBits}
	switch version {
	case 1:
		return append(base, t.clsFirst)
	case 2:
		return append(base, t.geoKeys, t.geoBits, t.clsFirst)
	case 3:
		return append(t.snapshotLayout(2), t.rateKeys, t.rateLast, t.rateCount, t.rateExposure)
	case 4:
		return append(t.snapshotLayout(3), t.params.arrays()...)
	case 5:
		return append(t.snapshotLayout(4), t.cycleCount, t.cycleExposure, t.cycleHour, t.cycleOpenCount, t.cycleOpenExposure)
	}
	return nil
}

// AppendSnapshot appends the table's contents to dst: a version, the slot
// counts, then every array of snapshotLayout as little-endian words.
// Concurrent Learn calls may or may not be included; take it while workers
// are stopped for an exact copy.
func (t *ClassTable) AppendSnapshot(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, snapshotVersion)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(t.cmdKeys)))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(t.clsKeys)))
	for _, arr := range t.snapshotLayout(snapshotVersion) {
		for i := range arr {
			dst = binary.LittleEndian.AppendUint64(dst, arr[i].Load())
		}
	}
	return dst
}

// LoadSnapshot replaces the table's contents with a snapshot taken by
// AppendSnapshot from a table of the same sizes. An older version loads with
// the arrays it lacks empty: a version 1 snapshot (from before the geo
// arrays) learns countries and ASNs again, and a device's own history still
// knows them; a version 2 snapshot (from before the rate samples) has no
// class rates until sampled devices have 10 minutes of history again, and a
// version 3 snapshot no argument ranges until their classes send 50 values
// from 5 devices again (nothing is judged meanwhile), and a version 4
// snapshot no daily cycles until their hours are seen again (no ramp
// meanwhile). On error the table is unchanged.
func (t *ClassTable) LoadSnapshot(b []byte) error {
	if len(b) < 20 {
		return fmt.Errorf("cannot load class snapshot: %d bytes is too short", len(b))
	}
	v := binary.LittleEndian.Uint32(b)
	arrays := t.snapshotLayout(v)
	if arrays == nil {
		return fmt.Errorf("cannot load class snapshot: version %d, want %d or older", v, snapshotVersion)
	}
	cmds, classes := binary.LittleEndian.Uint64(b[4:]), binary.LittleEndian.Uint64(b[12:])
	if cmds != uint64(len(t.cmdKeys)) || classes != uint64(len(t.clsKeys)) {
		return fmt.Errorf("cannot load class snapshot: it has %d command and %d class slots, this table %d and %d",
			cmds, classes, len(t.cmdKeys), len(t.clsKeys))
	}
	words := 0
	for _, arr := range arrays {
		words += len(arr)
	}
	if len(b) != 20+8*words {
		return fmt.Errorf("cannot load class snapshot: %d bytes, want %d", len(b), 20+8*words)
	}
	for _, arr := range t.snapshotLayout(snapshotVersion) {
		for i := range arr {
			arr[i].Store(0)
		}
	}
	b = b[20:]
	for _, arr := range arrays {
		for i := range arr {
			arr[i].Store(binary.LittleEndian.Uint64(b))
			b = b[8:]
		}
	}
	return nil
}
