package volume

import (
	"math"

	"github.com/iotwatch/iotwatch/detectors"
)

// A class's daily cycle is learned from the devices of its rate sample
// (classrate.go): per class slot, 24 bins of UTC hours, each a count of
// the sampled devices' events and of their exposure (seconds between
// consecutive events, capped at rateMaxGap, given to the hour of the later
// event). A bin's rate, count/exposure, is a per-device rate, so devices
// joining or leaving the sample do not move it. The open hour is summed
// apart and added to its bin when the hour closes: what a device does now
// (a flood) cannot change the cycle it is judged with now. A bin whose
// exposure exceeds cycleMaxExposure (about a week of a full sample) halves
// its count and its exposure: the rate is kept, and the last week or two
// weigh most. An event arriving more than cycleBurst times faster than its
// hour's usual rate counts for less (dt·rate·cycleBurst), so that one
// flooding device moves its class's cycle by little.
//
// ClassRamp compares the cycle's rate now with its rate a lag ago: how much
// busier the class usually is now than when a baseline of that time
// constant learned. A volume baseline lags a morning ramp by about its time
// constant; multiplying its expectation by the ramp (never below 1) keeps
// the class's usual morning from looking like a flood. The ramp is the
// ratio's conservative bound (two Poisson standard deviations of each
// count), so that a flat class's noise, in a small class above all, is no
// ramp. The cycle never lowers an expectation: a device that does not
// follow its class's cycle (a camera in a shop open all night) is then at
// worst judged against its own lagging baseline, as without a cycle.
//
// UTC hours: a class whose devices span time zones (a tenant in Europe and
// Japan) has the mixture of their cycles, flatter than either, and its
// ramps are smaller: less tolerance, never more. Weekly cycles are not
// modelled.
const (
	cycleBins = 24
	// cycleMinExposure (seconds, two device-hours) and cycleMinCount make a
	// bin usable; ClassRamp is 1 unless both times it compares have one.
	cycleMinExposure = 7200.0
	cycleMinCount    = 20.0
	// cycleMaxExposure (seconds) halves a bin: 8 days of 16 sampled devices.
	cycleMaxExposure = rateSlots * 3600.0 * 8
	// cycleBurst: an event sooner than 1/cycleBurst of its hour's usual gap
	// counts for less, so that a flooding device counts as cycleBurst
	// devices at most (Poisson traffic loses 11% of its count, at every
	// hour alike: rates are compared by their ratio).
	cycleBurst = 4.0
	// cycleSigmas is how many Poisson standard deviations ClassRamp takes
	// off the ramp's counts.
	cycleSigmas = 2.0
	// MaxRamp bounds ClassRamp.
	MaxRamp = 32.0
)

// learnCycle counts one event of a sampled device of class slot j, dt
// seconds (already capped) after its previous one.
func (t *Stats) learnCycle(j int, time int64, dt float64) {
	if time <= 0 {
		return
	}
	hour := uint64(time/3600e9) + 1 // 0: no open hour
	for {
		open := t.cycleHour[j].Load()
		if hour <= open {
			break // the open hour (a late event counts in it)
		}
		if t.cycleHour[j].CompareAndSwap(open, hour) {
			if open != 0 {
				t.closeHour(j, open-1)
			}
			break
		}
	}
	count := 1.0
	if r, ok := t.binRate(cycleBin(j, time)); ok {
		count = min(1, dt*r*cycleBurst)
	}
	detectors.AddFloat(&t.cycleOpenCount[j], count)
	detectors.AddFloat(&t.cycleOpenExposure[j], dt)
}

// closeHour adds class slot j's open sums to the bin of hour (hours since
// the Unix epoch) and empties them.
func (t *Stats) closeHour(j int, hour uint64) {
	i := j*cycleBins + int(hour%cycleBins)
	c := math.Float64frombits(t.cycleOpenCount[j].Swap(0))
	e := math.Float64frombits(t.cycleOpenExposure[j].Swap(0))
	detectors.AddFloat(&t.cycleCount[i], c)
	if total := detectors.AddFloat(&t.cycleExposure[i], e); total > cycleMaxExposure {
		// Halve once: only the closer whose swap succeeds halves the count.
		if t.cycleExposure[i].CompareAndSwap(math.Float64bits(total), math.Float64bits(total/2)) {
			for {
				old := t.cycleCount[i].Load()
				if t.cycleCount[i].CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)/2)) {
					break
				}
			}
		}
	}
}

// cycleBin returns the index of the bin of time t (Unix ns) in class slot j.
func cycleBin(j int, t int64) int {
	h := (t / 3600e9) % cycleBins
	if h < 0 {
		h += cycleBins
	}
	return j*cycleBins + int(h)
}

// cycleAt returns the cycle's count and exposure at time t in class slot
// j, interpolated between the two nearest bins (their centres are at half
// past each hour), or those of the one usable bin when only one is; ok is
// false when neither is.
func (t *Stats) cycleAt(j int, time int64) (count, exposure float64, ok bool) {
	// Hours since the centre of bin 0.
	x := float64(time%(cycleBins*3600e9))/3600e9 - 0.5
	if x < 0 {
		x += cycleBins
	}
	h := int(x)
	w := x - float64(h)
	c0, e0, ok0 := t.bin(j*cycleBins + h%cycleBins)
	c1, e1, ok1 := t.bin(j*cycleBins + (h+1)%cycleBins)
	switch {
	case ok0 && ok1:
		return c0*(1-w) + c1*w, e0*(1-w) + e1*w, true
	case ok0:
		return c0, e0, true
	case ok1:
		return c1, e1, true
	}
	return 0, 0, false
}

// bin returns bin i's count and exposure and whether the bin is usable.
func (t *Stats) bin(i int) (count, exposure float64, ok bool) {
	c := math.Float64frombits(t.cycleCount[i].Load())
	e := math.Float64frombits(t.cycleExposure[i].Load())
	if !(c >= cycleMinCount && e >= cycleMinExposure) || math.IsInf(c, 1) || math.IsInf(e, 1) {
		return 0, 0, false
	}
	return c, e, true
}

// binRate returns bin i's rate and whether the bin is usable.
func (t *Stats) binRate(i int) (float64, bool) {
	c, e, ok := t.bin(i)
	if !ok {
		return 0, false
	}
	return c / e, true
}

// ClassRamp returns how much busier the class's daily cycle usually is at
// time now (Unix ns) than lag seconds before, in [1, MaxRamp]: the ratio of
// the two times' rates with cycleSigmas Poisson deviations taken against
// it, 1 when that is not above 1 (a flat or falling cycle, or too few
// counts to tell) or the cycle is unknown there (a class younger than the
// hours compared, or not in the table). It implements ClassRamper
// and does not allocate.
func (t *Stats) ClassRamp(class uint64, now int64, lag float64) float64 {
	j := detectors.Slot(t.keys, class, false)
	if j < 0 || now <= 0 {
		return 1
	}
	cNow, eNow, ok := t.cycleAt(j, now)
	if !ok {
		return 1
	}
	cThen, eThen, ok := t.cycleAt(j, now-int64(lag*1e9))
	if !ok {
		return 1
	}
	low := (cNow - cycleSigmas*math.Sqrt(cNow)) / eNow
	high := (cThen + cycleSigmas*math.Sqrt(cThen)) / eThen
	if !(low > high) {
		return 1
	}
	return min(low/high, MaxRamp)
}
