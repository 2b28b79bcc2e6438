package volume

import (
	"fmt"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Stats is what the volume detector learns of classes (its
// detectors.ClassStats and the Fleet view its Observe gets, implementing
// ClassRater, ClassRamper and ClassFailer): per class, the request rates of a
// sample of its devices (classrate.go) and their burstiness (classburst.go),
// their 24-hour cycle (classcycle.go)
// and the devices seen and failing in the last minutes (classerrors.go). It
// has its own table of class keys, as many as the class table's, and costs
// 1,200 bytes per class slot.
type Stats struct {
	classes *detectors.ClassTable
	keys    []atomic.Uint64 // class keys (detectors.Slot)
	// rateSlots sampled devices per class slot: key, last event time (Unix
	// ns), decayed count and exposure (float64 bits).
	rateKeys, rateLast, rateCount, rateExposure []atomic.Uint64
	// rateBurst: each sampled device's burst memory and open episode (the
	// words of its record at burstAt and peakAt).
	rateBurst []atomic.Uint64
	// cycleBins hours per class slot: the sampled devices' event count and
	// exposure (float64 bits).
	cycleCount, cycleExposure []atomic.Uint64
	// Per class slot: the open hour (hours since the epoch + 1; 0: none)
	// and its sums, added to its bin when it closes.
	cycleHour, cycleOpenCount, cycleOpenExposure []atomic.Uint64
	// Per class slot: the current failure bucket (its index + 1; 0: none),
	// and two halves of failWords words each of the sketches of devices
	// seen and failing.
	failBucket, failSeen, failFailing []atomic.Uint64
	// Per class slot: the latest failure bucket (its index + 1; 0: none) in
	// which the class was failing (ClassFailedAt).
	failLast  []atomic.Uint64
	saturated atomic.Uint64
	// overlay is the other instances' rate samples (MergeFrom, SetOverlay),
	// nil when not merged.
	overlay atomic.Pointer[Stats]
}

// NewStats returns empty statistics over classes, with classes.ClassSlots()
// class slots.
func NewStats(classes *detectors.ClassTable) *Stats {
	k := classes.ClassSlots()
	return &Stats{
		classes: classes, keys: make([]atomic.Uint64, k),
		rateKeys: make([]atomic.Uint64, k*rateSlots), rateLast: make([]atomic.Uint64, k*rateSlots),
		rateCount: make([]atomic.Uint64, k*rateSlots), rateExposure: make([]atomic.Uint64, k*rateSlots),
		rateBurst:  make([]atomic.Uint64, k*rateSlots),
		cycleCount: make([]atomic.Uint64, k*cycleBins), cycleExposure: make([]atomic.Uint64, k*cycleBins),
		cycleHour: make([]atomic.Uint64, k), cycleOpenCount: make([]atomic.Uint64, k),
		cycleOpenExposure: make([]atomic.Uint64, k),
		failBucket:        make([]atomic.Uint64, k), failSeen: make([]atomic.Uint64, k*2*failWords),
		failFailing: make([]atomic.Uint64, k*2*failWords), failLast: make([]atomic.Uint64, k),
	}
}

// ClassDevices implements detectors.Fleet.
func (t *Stats) ClassDevices(class uint64) float64 { return t.classes.ClassDevices(class) }

// ClassSince implements detectors.Fleet.
func (t *Stats) ClassSince(class uint64) int64 { return t.classes.ClassSince(class) }

// Learn implements detectors.ClassStats: it counts ev in its device's rate
// sample slot of its class (with the device's burst memory, read from
// before, its record before the event), if the device is the slot's sample,
// in the class's cycle, and in its class's failure sketches.
func (t *Stats) Learn(ev *schemas.Event, before []byte) {
	j := detectors.Slot(t.keys, ev.ClassKey, true)
	if j < 0 {
		t.saturated.Add(1)
		return
	}
	t.learnRate(j, ev, before)
	t.learnFail(j, ev)
	t.learnFleetFail(ev)
	// The model (the class across tenants) samples devices too, so that a
	// tenant's class too young to know its burstiness asks its model
	// (ClassBurst).
	if ev.HasModel() {
		if m := detectors.Slot(t.keys, ev.ModelKey, true); m >= 0 {
			t.learnRate(m, ev, before)
		}
	}
}

// MergeFrom implements detectors.ClassMerger: other's rate samples (and
// their burst memories) merge into s's slot by slot, each slot keeping the
// sample of the smaller device key (see pickSample): the bottom-1 sample of
// the union of the instances' devices, as one instance of the whole fleet
// keeps it. The class cycles and failure sketches are not merged: they stay
// each instance's own.
func (t *Stats) MergeFrom(other detectors.ClassStats) { t.mergeRates(other.(*Stats)) }

// SetOverlay implements detectors.ClassMerger: ClassRate and ClassBurst
// read the overlay's samples too.
func (t *Stats) SetOverlay(o detectors.ClassStats) {
	if o, ok := o.(*Stats); ok && o != nil {
		t.overlay.Store(o)
		return
	}
	t.overlay.Store(nil)
}

// Saturated returns how many learn calls found the table full.
func (t *Stats) Saturated() uint64 { return t.saturated.Load() }

// statsVersion versions the snapshot of Stats (1: the class table's version 5
// rate samples and cycles, with a table of class keys of its own; 2: and the
// failure sketches; 3: and the sampled devices' burst memories; 4: and each
// class's latest failing minute).
const statsVersion = 4

func (t *Stats) arrays() [][]atomic.Uint64 {
	return [][]atomic.Uint64{t.keys, t.rateKeys, t.rateLast, t.rateCount, t.rateExposure,
		t.cycleCount, t.cycleExposure, t.cycleHour, t.cycleOpenCount, t.cycleOpenExposure,
		t.failBucket, t.failSeen, t.failFailing, t.rateBurst, t.failLast}
}

// AppendSnapshot implements detectors.ClassStats.
func (t *Stats) AppendSnapshot(dst []byte) []byte {
	dst = detectors.AppendStatsHeader(dst, statsVersion, len(t.keys))
	return detectors.AppendWords(dst, t.arrays()...)
}

// LoadSnapshot implements detectors.ClassStats.
func (t *Stats) LoadSnapshot(b []byte) error {
	rest, err := detectors.ReadStatsHeader(b, "volume statistics", statsVersion, len(t.keys))
	if err != nil {
		return err
	}
	if err := detectors.LoadWords(rest, t.arrays()...); err != nil {
		return fmt.Errorf("cannot load volume statistics: %w", err)
	}
	return nil
}
