package volume

import (
	"math"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// A class's typical per-device request rate (ClassRate) is the median of the
// rates of a sample of its devices: each class slot has rateSlots sample
// slots, a device belongs to the one its key's top bits choose, and each
// sample slot follows one device, the one with the smallest key among those
// seen recently (a bottom-1 sample per slot, deterministic for a given set of
// devices). Every device, however many requests it sends, is one sample, so a
// flooding device, or a few, move the median by at most a rank each.
//
// A sample slot keeps its device's key, its last event time and, as volume
// does, a request count and an exposure time decayed with RateTau.
// Only the device's own worker writes its slot (one writer per device); a
// smaller key taking the slot over while the previous owner's worker writes
// may leave one stale count behind, which decays away.
const (
	rateSlots = 16 // sample slots per class slot
	// RateTau is the time constant, in seconds, of the sampled devices' counts.
	RateTau = 3600.0
	// RateMinExposure (seconds of decayed exposure, about 10 minutes) and
	// RateMinEvents make a sampled device's rate usable.
	RateMinExposure = 600.0
	RateMinEvents   = 5.0
	// RateMinDevices is the smallest number of usable samples for a class
	// rate; with fewer, ClassRate returns 0 (not established).
	RateMinDevices = 3
	// rateStale (seconds) frees a slot whose device has been silent that long,
	// so that a departed device does not hold it with a rate decaying to 0.
	rateStale = 2 * RateTau
	// rateMaxGap bounds the exposure a silence adds, in seconds, as volume's
	// caps do: a device off for an hour does not halve its rate.
	rateMaxGap = 1800.0
)

// rateSlot returns the sample slot index of device in class slot j.
func rateSlot(j int, device uint64) int { return j*rateSlots + int(device>>60) }

// learnRate counts ev in its device's sample slot of class slot j.
func (t *Stats) learnRate(j int, ev *schemas.Event, before []byte) {
	i := rateSlot(j, ev.DeviceKey)
	owns, taken := detectors.ClaimSample(t.rateKeys, t.rateLast, i, ev.DeviceKey, ev.Time, rateStale)
	if !owns {
		return
	}
	if taken {
		t.rateLast[i].Store(uint64(ev.Time))
		t.rateCount[i].Store(0)
		t.rateExposure[i].Store(0)
		t.rateBurst[i].Store(0)
	}
	last := int64(t.rateLast[i].Load())
	dt := 0.0
	if ev.Time > last {
		dt = min(float64(ev.Time-last)/1e9, rateMaxGap)
		t.rateLast[i].Store(uint64(ev.Time))
	}
	t.learnCycle(j, ev.Time, dt)
	t.learnBurstSample(i, before)
	d := detectors.Decay(dt / RateTau)
	count := math.Float64frombits(t.rateCount[i].Load())*d + 1
	exposure := math.Float64frombits(t.rateExposure[i].Load())*d + RateTau*(1-d)
	t.rateCount[i].Store(math.Float64bits(count))
	t.rateExposure[i].Store(math.Float64bits(exposure))
}

// ClassRate returns the typical request rate, per second, of one device of
// the class: the median rate of its usable sampled devices, or 0 when it has
// fewer than RateMinDevices (the class is not established). It implements
// ClassRater and does not allocate.
func (t *Stats) ClassRate(class uint64) float64 {
	j, o, jo := t.sampleSlots(class)
	if j < 0 && jo < 0 {
		return 0
	}
	var rates [rateSlots]float64
	n := 0
	for s := range rateSlots {
		src, i := pickSample(t, j, o, jo, s)
		if src == nil || !src.usableSample(i) {
			continue
		}
		count := math.Float64frombits(src.rateCount[i].Load())
		exposure := math.Float64frombits(src.rateExposure[i].Load())
		// Insertion sort: at most 16 values.
		r, k := count/exposure, n
		for ; k > 0 && rates[k-1] > r; k-- {
			rates[k] = rates[k-1]
		}
		rates[k] = r
		n++
	}
	if n < RateMinDevices {
		return 0
	}
	return median(rates[:n])
}

// usableSample reports whether sample slot i follows a device with enough
// history for its rate to count (RateMinEvents, RateMinExposure).
func (t *Stats) usableSample(i int) bool {
	if t.rateKeys[i].Load() == 0 {
		return false
	}
	count := math.Float64frombits(t.rateCount[i].Load())
	exposure := math.Float64frombits(t.rateExposure[i].Load())
	return count >= RateMinEvents && exposure >= RateMinExposure && !math.IsInf(count, 1)
}

// sampleSlots returns the class's slot in t (-1: none) and, when t has an
// overlay of other instances' samples (SetOverlay), the overlay and the
// class's slot in it (-1: none).
func (t *Stats) sampleSlots(class uint64) (j int, o *Stats, jo int) {
	j, jo = detectors.Slot(t.keys, class, false), -1
	if o = t.overlay.Load(); o != nil {
		jo = detectors.Slot(o.keys, class, false)
	}
	return j, o, jo
}

// pickSample returns which of sample slot s of class slot j of t and of
// class slot jo of o (either -1 or nil: none) follows the class's sample
// device, and its index: the smaller key, as each instance's bottom-1
// sample keeps the smallest key it saw, unless that device has been silent
// rateStale longer than the other (a departed device, which the slot's
// next event would have freed); of two copies of the same device, the one
// learned up to the later event. Two instances hold the same device when
// its partition moved: the previous owner keeps its sample as of the move
// (and a killed owner's last contribution keeps being merged), the new
// owner learns on. Before, the first copy met won: in the 3-node cluster
// test a survivor read a killed scorer's copies of vehicles' samples, an
// hour old, and judged veh-000043's rate spike against a model burstiness
// of 4.75 (run ratio) where one instance had 10.25 (bench/RESULTS.md w3).
// nil when neither holds a device.
func pickSample(t *Stats, j int, o *Stats, jo, s int) (*Stats, int) {
	var ka, kb uint64
	if j >= 0 {
		ka = t.rateKeys[j*rateSlots+s].Load()
	}
	if jo >= 0 {
		kb = o.rateKeys[jo*rateSlots+s].Load()
	}
	switch {
	case ka == 0 && kb == 0:
		return nil, 0
	case kb == 0:
		return t, j*rateSlots + s
	case ka == 0:
		return o, jo*rateSlots + s
	}
	ia, ib := j*rateSlots+s, jo*rateSlots+s
	la, lb := int64(t.rateLast[ia].Load()), int64(o.rateLast[ib].Load())
	switch {
	case float64(lb-la)/1e9 > rateStale:
		return o, ib
	case float64(la-lb)/1e9 > rateStale:
		return t, ia
	case kb < ka, kb == ka && lb > la:
		return o, ib
	}
	return t, ia
}

// mergeRates adds other's rate samples to t, an accumulator no worker uses:
// per class and sample slot, the sample pickSample would read (keys,
// last times, counts, exposures and burst memories move together).
func (t *Stats) mergeRates(other *Stats) {
	for c := range other.keys {
		key := other.keys[c].Load()
		if key == 0 {
			continue
		}
		j := detectors.Slot(t.keys, key, true)
		if j < 0 {
			t.saturated.Add(1)
			continue
		}
		for s := range rateSlots {
			if src, i := pickSample(t, j, other, c, s); src == other {
				d := j*rateSlots + s
				t.rateKeys[d].Store(other.rateKeys[i].Load())
				t.rateLast[d].Store(other.rateLast[i].Load())
				t.rateCount[d].Store(other.rateCount[i].Load())
				t.rateExposure[d].Store(other.rateExposure[i].Load())
				t.rateBurst[d].Store(other.rateBurst[i].Load())
			}
		}
	}
}
