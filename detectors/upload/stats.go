package upload

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Stats is what the upload detector learns of classes (its
// detectors.ClassStats and the Fleet view its Observe gets, implementing
// ClassBander): per class, the bands of a sample of its warm devices. Each
// class slot has sampleSlots sample slots; a device belongs to the one its
// key's top bits choose, and each slot follows one device, the one with the
// smallest key among the warm devices seen recently (a bottom-1 sample per
// slot, deterministic for a given set of devices, as the volume detector's
// rate sample). Every device is one sample however much it uploads, so a
// device uploading far more than its class, or a few, move the class's
// upper-quartile band by at most a rank each. It costs 8 + 32·16 bytes per class
// slot, and 64 per (class, command) slot of request size ranges
// (ClassRequestSize; CommandSlots of them).
type Stats struct {
	classes *detectors.ClassTable
	keys    []atomic.Uint64 // class keys (detectors.Slot)
	// sampleSlots sampled devices per class slot: key, last event time (Unix
	// ns) and band (float64 bits, as of that time).
	sampKeys, sampLast, sampBand, sampBucket []atomic.Uint64
	saturated                                atomic.Uint64
	// sizes is the range of log(1 + bytes in) per class and command
	// (ClassRequestSize).
	sizes *detectors.ParamTable
}

const (
	sampleSlots = 16 // sample slots per class slot
	// SampleMinDevices is the smallest number of fresh samples for a class
	// band; with fewer, ClassBand returns 0 (not known).
	SampleMinDevices = 3
	// sampleStale (seconds) frees a slot whose device has been silent that
	// long, and makes its band unused.
	sampleStale = 6 * 3600.0
)

// NewStats returns empty statistics over classes, with classes.ClassSlots()
// class slots.
func NewStats(classes *detectors.ClassTable) *Stats {
	k := classes.ClassSlots()
	return &Stats{
		classes: classes, keys: make([]atomic.Uint64, k),
		sampKeys: make([]atomic.Uint64, k*sampleSlots), sampLast: make([]atomic.Uint64, k*sampleSlots),
		sampBand: make([]atomic.Uint64, k*sampleSlots), sampBucket: make([]atomic.Uint64, k*sampleSlots),
		sizes: detectors.NewParamTable(classes.CommandSlots()),
	}
}

// requestSizeKey is the name key under which the range of a command's
// request sizes, log(1 + bytes in), is kept per class (a constant: no
// argument's name hashes to it in practice).
const requestSizeKey = 0x7265_7175_6573_7473 // "requests"

// SizeLearnK: a request more than SizeLearnK scales from its class's median
// for the command teaches the range nothing and counts as contradicting it
// (detectors.ParamTable.LearnValue), so that one device's growing or
// oversized uploads do not widen the range it is judged against.
const SizeLearnK = detectors.ParamK / 2

// sizeLearned reports whether ev's request size teaches its class's range:
// a request with a body, of a device of a known class.
func sizeLearned(ev *schemas.Event) bool { return ev.BytesIn > 0 && len(ev.Class) > 0 }

// ClassRequestSize returns the range of log(1 + bytes in) the class's
// devices send with command; the zero range (not Ready) if none.
func (t *Stats) ClassRequestSize(class, command uint64) detectors.ParamRange {
	return t.sizes.ClassParam(class, command, requestSizeKey)
}

// ClassDevices implements detectors.Fleet.
func (t *Stats) ClassDevices(class uint64) float64 { return t.classes.ClassDevices(class) }

// ClassSince implements detectors.Fleet.
func (t *Stats) ClassSince(class uint64) int64 { return t.classes.ClassSince(class) }

// Learn implements detectors.ClassStats: every request with a body teaches
// its class's range of request sizes for its command (ClassRequestSize); a
// warm device (before, its state before ev, has WarmBuckets) offers its band
// to its sample slot of its class.
func (t *Stats) Learn(ev *schemas.Event, before []byte) {
	if sizeLearned(ev) {
		t.sizes.LearnValue(ev.ClassKey, ev.CommandID, requestSizeKey, detectors.Log1pCount(float64(ev.BytesIn)), SizeLearnK, ev.DeviceKey)
	}
	if len(before) < StateSize || binary.LittleEndian.Uint16(before[10:]) < WarmBuckets {
		return
	}
	j := detectors.Slot(t.keys, ev.ClassKey, true)
	if j < 0 {
		t.saturated.Add(1)
		return
	}
	last := int64(binary.LittleEndian.Uint64(before[0:]))
	band := f32(before[20:], maxLog)
	bucket := float64(binary.LittleEndian.Uint16(before[14:])) / fixScale
	if ev.Time > last {
		d := float64(ev.Time-last) / 1e9 * peakDecay
		band = max(band-d, 0)
	}
	i := j*sampleSlots + int(ev.DeviceKey>>60)
	if owns, _ := detectors.ClaimSample(t.sampKeys, t.sampLast, i, ev.DeviceKey, ev.Time, sampleStale); !owns {
		return
	}
	if int64(t.sampLast[i].Load()) < ev.Time {
		t.sampLast[i].Store(uint64(ev.Time))
	}
	t.sampBand[i].Store(math.Float64bits(band))
	t.sampBucket[i].Store(math.Float64bits(bucket))
}

// ClassBands returns the upper quartile of the bands of the class's fresh
// samples (seen within 6 h of the class's latest), or zeros with fewer than
// SampleMinDevices: the upper quartile, not the median, since many devices
// of a class upload in sessions (a camera's clips) that not all of them had
// lately. It implements ClassBander and does not allocate.
func (t *Stats) ClassBands(class uint64) (window, bucket float64) {
	j := detectors.Slot(t.keys, class, false)
	if j < 0 {
		return 0, 0
	}
	latest := int64(0)
	for i := j * sampleSlots; i < (j+1)*sampleSlots; i++ {
		latest = max(latest, int64(t.sampLast[i].Load()))
	}
	var windows, buckets [sampleSlots]float64
	n := 0
	for i := j * sampleSlots; i < (j+1)*sampleSlots; i++ {
		if t.sampKeys[i].Load() == 0 || float64(latest-int64(t.sampLast[i].Load()))/1e9 > sampleStale {
			continue
		}
		w, b := math.Float64frombits(t.sampBand[i].Load()), math.Float64frombits(t.sampBucket[i].Load())
		if !(w >= 0 && w <= maxLog && b >= 0 && b <= maxLog) {
			continue
		}
		insert(&windows, n, w)
		insert(&buckets, n, b)
		n++
	}
	if n < SampleMinDevices {
		return 0, 0
	}
	q := n * 3 / 4 // the upper quartile's rank
	return windows[q], buckets[q]
}

// insert inserts v into the sorted first n values of a.
func insert(a *[sampleSlots]float64, n int, v float64) {
	k := n
	for ; k > 0 && a[k-1] > v; k-- {
		a[k] = a[k-1]
	}
	a[k] = v
}

// Saturated returns how many learn calls found the table full.
func (t *Stats) Saturated() uint64 { return t.saturated.Load() + t.sizes.Saturated() }

// statsVersion versions the snapshot of Stats.
const statsVersion = 2 // 2: the request size ranges

// The snapshot holds the samples' arrays, then the request size ranges'
// columns (detectors.ParamTable.AppendWords).
func (t *Stats) arrays() [][]atomic.Uint64 {
	return [][]atomic.Uint64{t.keys, t.sampKeys, t.sampLast, t.sampBand, t.sampBucket}
}

// AppendSnapshot implements detectors.ClassStats.
func (t *Stats) AppendSnapshot(dst []byte) []byte {
	dst = detectors.AppendStatsHeader(dst, statsVersion, len(t.keys), t.classes.CommandSlots())
	dst = detectors.AppendWords(dst, t.arrays()...)
	return t.sizes.AppendWords(dst)
}

// LoadSnapshot implements detectors.ClassStats.
func (t *Stats) LoadSnapshot(b []byte) error {
	rest, err := detectors.ReadStatsHeader(b, "upload statistics", statsVersion, len(t.keys), t.classes.CommandSlots())
	if err != nil {
		return err
	}
	samples := 8 * (len(t.keys) + 4*len(t.sampKeys))
	if want := samples + 8*t.sizes.Words(); len(rest) != want {
		return fmt.Errorf("cannot load upload statistics: %d bytes, want %d", len(rest), want)
	}
	// The length is right: no part fails, none is loaded without the other.
	if err := detectors.LoadWords(rest[:samples], t.arrays()...); err != nil {
		return fmt.Errorf("cannot load upload statistics: %w", err)
	}
	if err := t.sizes.LoadWords(rest[samples:]); err != nil {
		return fmt.Errorf("cannot load upload statistics: %w", err)
	}
	return nil
}
