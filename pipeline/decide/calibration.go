package decide

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Calibration maps a combined score to an estimated false-alarm rate, learned
// from the traffic in event time, so that an alert threshold can be stated as
// a budget of false alerts per 1,000 device-hours (Config.AlertBudget).
//
// What it counts. A device-hour is one device's traffic in one hour of event
// time, counted (for the fleet and for the device's class) once complete:
// at the device's first event of a later hour, so that the first hour of a
// fleet counts none and a warm-up in device-hours is one of observed time.
// A class here is the device's model across tenants (CalibrationClass).
// The cause of a scored event is its strongest finding's detector and
// reason. For each class and cause, and for each cause
// fleet-wide, an exceedance histogram counts the device-hours whose largest
// combined score for that cause reached each of CalibrationBins score bins
// from MinCalibratedScore up: a device adds at most one to a bin per hour and
// per cause, however many events it sends, so a flood from one device is one
// device-hour, not thousands of events.
//
// The estimate. For class c, cause r and score s (its bin b), with n(c,r,b)
// device-hours at or above b out of D(c) device-hours of the class, and the
// fleet's N(r,b) of D:
//
//	rate(c, r, s) = (max(0, n(c,r,b) − m) + k · max(0, N(r,b) − m) / D) / (D(c) + k)
//
// per device-hour: the class's own exceedance frequency, shrunk toward the
// fleet's for a class with few device-hours (k = calPriorHours pseudo
// device-hours), after discounting the first m = CalibrationMargin
// device-hours of every tail. A score of a cause seen m times or fewer in
// the class (and the fleet) at or above its bin is rated 0: rare.
//
// Robustness: an attacking device adds at most one device-hour per hour and
// cause, and the first m of them in a class and cause change nothing; beyond
// that, each attacking device-hour weighs like one benign one, so a fraction
// f of a class's device-hours spent attacking at score s adds at most f to
// the class's rate at every score up to s (and 1/k-th of that, weighted by
// the class's share, to other classes through the fleet prior).
//
// Bursts. Many devices of one class scoring one cause in the same hour are
// one event (a campaign spread over the class's devices, such as a
// distributed flood on their route, or a fleet incident), not that many
// independent false alarms: within one hour of event time each score bin of
// a class and cause counts at most max(calBurstMin, calBurstShare of the
// class's devices seen in that hour) device-hours; the device-hours beyond
// are not counted in that bin (for the class nor the fleet). A bin's hourly
// count is min(its true count, the cap), so the counts still fall with the
// score. Without the cap, a distributed flood on 27
// thermostats' route raised the thermostats' rate_spike threshold above
// 0.88 for the rest of the run, and hid a one-device flood minutes later
// (basic seed 1 with --entities). A bin whose benign device-hours per hour
// stay under the cap counts as before: where the level of a budget up to
// calBurstShare per device-hour sits, a class of D devices has D times that
// level device-hours an hour, under the cap. The per-hour counts (burst,
// binBurst) are not in the snapshot: a restart counts the hour it lands in
// afresh.
//
// The level. Given a budget B (false alerts per 1,000 device-hours), the
// level q is the largest rate such that alerting on every event whose
// rate(c, r, s) ≤ q would have raised at most B/1000 alert device-hours per
// fleet device-hour over what was counted so far: the sum, over every class
// and cause, of the class's share of device-hours times its rate at the
// lowest bin whose rate is ≤ q. It is solved again, by bisection over
// every class and cause, each time the fleet's device-hours grow by
// max(calSolveEvery, 3%) (the fleet's level, not a per-class one:
// classes with noisy causes get high thresholds, quiet ones low). Each solve
// also fixes every class and cause's threshold (Alerts): the lowest bin whose
// rate is at most the level then. Between solves the thresholds stay put, so
// a score alerts or not the same way until the next solve: compared live, a
// rate sitting at the level (the class and cause the bisection stops on)
// would flip with every device-hour counted. Before
// the warm-up (CalibrationWarmup complete device-hours, and calWarmupTail
// divided by the budget per device-hour: 4,000 at 0.5), the level is not
// used (the engine's fixed AlertThreshold applies), so a cold start alerts
// as a fixed threshold does.
//
// Concurrency and cost: one Calibration is shared by every worker's engine,
// like the class model (fixed-size open-addressed tables of atomic words,
// detectors.Slot); a device's hour and per-cause maxima live in its record
// (CalibrationStateSize bytes of the worker's header), written only by the
// device's worker (one writer per device). Learn and Rate do not allocate;
// Learn costs a comparison for an event in a counted hour scoring below
// MinCalibratedScore (nearly all of them). The solve runs inline in the
// worker that crosses the step, bounded by the table size.
//
// Determinism: with one worker (replay, eval, golden scenarios) the counts
// and levels depend only on the events in order; with several, on the
// order the workers reach the solve steps (as the class model's sketches).
type Calibration struct {
	budget float64 // per device-hour (Config.AlertBudget / 1000); 0: no level is solved
	warmup uint64  // device-hours before Ready

	keys  []atomic.Uint64 // open-addressed slots (detectors.Slot)
	meta  []atomic.Uint64 // per class-cause slot: class slot+1 | (fleet cause slot+1)<<32; 0 for others
	cum   []atomic.Uint64 // per slot, CalibrationBins exceedance counts (device-hour counts: bin 0)
	hours atomic.Uint64   // the fleet's device-hours
	next  atomic.Uint64   // device-hours at which the level is solved next
	level atomic.Uint64   // float64 bits of the level (per device-hour)
	// thr holds, per class-cause slot, the lowest bin alerted at the last
	// solve, plus one (0: not solved yet; CalibrationBins+1: none).
	thr []atomic.Uint32
	// burst holds, per class device-hour slot, the hour (as Learn numbers
	// it) in its high 32 bits and the class's devices seen in that hour;
	// binBurst, per slot and bin, the hour and the device-hours counted in
	// the bin in that hour (see Bursts).
	burst    []atomic.Uint64
	binBurst []atomic.Uint64
	full     atomic.Uint64 // keys not learned: the table was full
}

// Calibration constants. They are documented on Calibration; changing one
// changes what a snapshot means (calSnapshotVersion).
const (
	// CalibrationBins is the number of score bins, of equal width from
	// MinCalibratedScore to 1.
	CalibrationBins = 40
	// MinCalibratedScore is the lowest score the calibration counts, and the
	// lowest an alert can have when the budget sets the threshold
	// (Config.MinAlertScore may raise it).
	MinCalibratedScore = 0.5
	// CalibrationMargin is how many device-hours of a class's (or the
	// fleet's) tail the estimate discounts: that many attacking
	// device-hours of one cause in a class do not move its threshold.
	CalibrationMargin = 2
	// CalibrationWarmup is how many fleet device-hours must be counted
	// before the budget sets the threshold, at least: also enough for
	// calWarmupTail device-hours at the budget's rate (4,000 at a budget of
	// 0.5), so that a tail as rare as the budget was seen a few times.
	CalibrationWarmup = 1000
	calWarmupTail     = 2.0
	// CalibrationStateSize is the per-device memory (in the worker's record
	// header): the hour counted (u32) and calCauses causes' largest bins of
	// that hour (tag u16, bin+1 u8).
	CalibrationStateSize = 4 + 3*calCauses

	calCauses     = 4
	calSlots      = 1 << 12
	calPriorHours = 24.0  // k: pseudo device-hours of the fleet prior
	calSolveEvery = 500.0 // device-hours between solves, at least
	calBinWidth   = (1 - MinCalibratedScore) / CalibrationBins
	calFleet      = 0x6a09e667f3bcc909 // the "class" of fleet-wide causes
	calHourTag    = 0xbb67ae8584caa73b // the "cause" of a class's device-hour count
	calSnapshotV  = 1
	// calBurstMin and calBurstShare bound the device-hours a class and cause
	// count in one hour (see Bursts on Calibration): at least calBurstMin,
	// or calBurstShare of the class's devices seen in the hour (ten times
	// the default budget's rate, so no level at or under 5 per 1,000
	// device-hours is set by a capped bin).
	calBurstMin   = 3
	calBurstShare = 0.005
)

// NewCalibration returns an empty calibration that solves the level for
// budget false alerts per 1,000 device-hours (0: none, Rate still works).
// Its tables take about 2.8 MB.
func NewCalibration(budget float64) *Calibration {
	c := &Calibration{budget: budget / 1000, keys: make([]atomic.Uint64, calSlots),
		meta: make([]atomic.Uint64, calSlots), cum: make([]atomic.Uint64, calSlots*CalibrationBins),
		thr: make([]atomic.Uint32, calSlots), burst: make([]atomic.Uint64, calSlots),
		binBurst: make([]atomic.Uint64, calSlots*CalibrationBins)}
	c.warmup = CalibrationWarmup
	if budget > 0 {
		c.warmup = max(c.warmup, uint64(math.Ceil(calWarmupTail/c.budget)))
	}
	c.next.Store(c.warmup)
	return c
}

// CalibrationClass is the class ev's calibration counts under: its model
// across tenants (schemas.Event.ModelKey) when it has one, else its class.
// Device-hours of one model behave alike whatever tenant they serve, and
// the tails are thin enough as it is.
func CalibrationClass(ev *schemas.Event) uint64 {
	if ev.HasModel() {
		return ev.ModelKey
	}
	return ev.ClassKey
}

// calBin is score's bin, -1 below MinCalibratedScore.
func calBin(score float64) int {
	if !(score >= MinCalibratedScore) {
		return -1
	}
	return min(int((score-MinCalibratedScore)/calBinWidth), CalibrationBins-1)
}

// BinScore is the lowest score of bin b: the thresholds the calibration
// can set are these.
func BinScore(b int) float64 { return MinCalibratedScore + float64(b)*calBinWidth }

// CauseOf returns the key of s's cause (its strongest finding's detector and
// reason), 0 when s has no finding. It does not allocate.
func CauseOf(s *schemas.Scored) uint64 {
	var top *schemas.Finding
	for i := range s.Reasons() {
		if f := &s.Findings[i]; top == nil || f.Score > top.Score {
			top = f
		}
	}
	if top == nil {
		return 0
	}
	return schemas.HashString(top.Detector)*0x9e3779b97f4a7c15 ^ schemas.HashString(top.Reason)
}

// Learn counts ev's device-hour and its combined score s.Score for its cause
// (CauseOf). mem is the device's CalibrationStateSize bytes; only the
// device's worker may pass them. An event of an hour before the one mem
// counted (out of order) is not learned. It does not allocate.
func (c *Calibration) Learn(ev *schemas.Event, s *schemas.Scored, mem []byte) {
	if c == nil || len(mem) < CalibrationStateSize {
		return
	}
	class := CalibrationClass(ev)
	hour := uint32(floorDiv(ev.Time, 3600e9)) + 1 // 0 marks "none"
	switch seen := binary.LittleEndian.Uint32(mem); {
	case hour < seen:
		return
	case hour > seen:
		binary.LittleEndian.PutUint32(mem, hour)
		clear(mem[4:CalibrationStateSize])
		j := detectors.Slot(c.keys, detectors.PairKey(class, calHourTag), true)
		if j >= 0 {
			bump(&c.burst[j], hour, math.MaxUint32)
		}
		if j < 0 {
			c.full.Add(1)
		} else if seen != 0 {
			// The device's previous hour is complete: count it.
			c.cum[j*CalibrationBins].Add(1)
			c.hours.Add(1)
			c.maybeSolve()
		}
	}
	b := calBin(float64(s.Score))
	if b < 0 {
		return
	}
	cause := CauseOf(s)
	tag := uint16(cause>>48) | 1
	slot := -1
	for i := range calCauses {
		t := binary.LittleEndian.Uint16(mem[4+3*i:])
		if t == tag {
			slot = i
			break
		}
		if t == 0 && slot < 0 {
			slot = i
		}
	}
	if slot < 0 {
		return // more causes in the hour than the record remembers: the rest are not counted
	}
	at := mem[4+3*slot:]
	had := int(at[2]) // bins below had are counted already
	if b < had {
		return
	}
	binary.LittleEndian.PutUint16(at, tag)
	at[2] = byte(b + 1)
	fj := detectors.Slot(c.keys, detectors.PairKey(calFleet, cause), true)
	cj := detectors.Slot(c.keys, detectors.PairKey(class, cause), true)
	hj := detectors.Slot(c.keys, detectors.PairKey(class, calHourTag), false)
	if fj < 0 || cj < 0 || hj < 0 {
		c.full.Add(1)
		return
	}
	if c.meta[cj].Load() == 0 {
		c.meta[cj].Store(uint64(hj+1) | uint64(fj+1)<<32)
	}
	limit := uint32(max(calBurstMin, math.Ceil(calBurstShare*float64(inHour(&c.burst[hj], hour)))))
	for i := had; i <= b; i++ {
		if !bump(&c.binBurst[cj*CalibrationBins+i], hour, limit) {
			continue // one burst of the class: the bin counted its cap this hour
		}
		c.cum[fj*CalibrationBins+i].Add(1)
		c.cum[cj*CalibrationBins+i].Add(1)
	}
}

// bump counts one in w's count for hour (an hour in its high 32 bits, the
// count in the low; starting the hour's count afresh when it holds another)
// unless that count reached limit, and reports whether it counted.
func bump(w *atomic.Uint64, hour, limit uint32) bool {
	for {
		old := w.Load()
		n := uint32(old)
		if uint32(old>>32) != hour {
			n = 0
		}
		if n >= limit {
			return false
		}
		if w.CompareAndSwap(old, uint64(hour)<<32|uint64(n+1)) {
			return true
		}
	}
}

// inHour returns w's count for hour (see bump), 0 when it holds another.
func inHour(w *atomic.Uint64, hour uint32) uint32 {
	v := w.Load()
	if uint32(v>>32) != hour {
		return 0
	}
	return uint32(v)
}

// Ready reports whether CalibrationWarmup device-hours have been counted:
// before, the level is not used.
func (c *Calibration) Ready() bool { return c != nil && c.hours.Load() >= c.warmup }

// DeviceHours returns the fleet device-hours counted.
func (c *Calibration) DeviceHours() uint64 { return c.hours.Load() }

// Level returns the rate (per device-hour) at or below which an event is
// alerted for the budget, as last solved (0 before the first solve).
func (c *Calibration) Level() float64 { return math.Float64frombits(c.level.Load()) }

// Saturated returns how many keys the full table could not learn.
func (c *Calibration) Saturated() uint64 { return c.full.Load() }

// Rate returns the estimated false-alarm rate per device-hour of an event
// of class with cause (CauseOf) at score (see Calibration); 1 below
// MinCalibratedScore. It does not allocate.
func (c *Calibration) Rate(class, cause uint64, score float64) float64 {
	b := calBin(score)
	if b < 0 {
		return 1
	}
	d := float64(c.hours.Load())
	if d == 0 {
		return 0
	}
	fleet := 0.0
	if j := detectors.Slot(c.keys, detectors.PairKey(calFleet, cause), false); j >= 0 {
		fleet = excess(c.cum[j*CalibrationBins+b].Load()) / d
	}
	n, dc := 0.0, 0.0
	if j := detectors.Slot(c.keys, detectors.PairKey(class, cause), false); j >= 0 {
		n = excess(c.cum[j*CalibrationBins+b].Load())
	}
	if j := detectors.Slot(c.keys, detectors.PairKey(class, calHourTag), false); j >= 0 {
		dc = float64(c.cum[j*CalibrationBins].Load())
	}
	return (n + calPriorHours*fleet) / (dc + calPriorHours)
}

// excess is a tail count after the margin.
func excess(n uint64) float64 { return float64(max(n, CalibrationMargin) - CalibrationMargin) }

// maybeSolve solves the level when the fleet's device-hours reached the next
// step; one caller wins the step.
func (c *Calibration) maybeSolve() {
	if c.budget <= 0 {
		return
	}
	h, next := c.hours.Load(), c.next.Load()
	if h < next || !c.next.CompareAndSwap(next, h+uint64(max(calSolveEvery, 0.03*float64(h)))) {
		return
	}
	c.setLevel(c.solve())
}

// setLevel stores the level q and fixes every class and cause's threshold
// bin at it (see Alerts).
func (c *Calibration) setLevel(q float64) {
	c.level.Store(math.Float64bits(q))
	d := float64(c.hours.Load())
	for j := range c.meta {
		m := c.meta[j].Load()
		if m == 0 || d == 0 {
			continue
		}
		hj, fj := int(uint32(m))-1, int(m>>32)-1
		dc := float64(c.cum[hj*CalibrationBins].Load())
		t := uint32(CalibrationBins + 1)
		for b := range CalibrationBins {
			if (excess(c.cum[j*CalibrationBins+b].Load())+calPriorHours*excess(c.cum[fj*CalibrationBins+b].Load())/d)/(dc+calPriorHours) <= q {
				t = uint32(b + 1)
				break
			}
		}
		c.thr[j].Store(t)
	}
}

// Alerts reports whether a score of class and cause is rare enough for the
// budget: its bin is at or above the class and cause's threshold fixed at
// the last solve, or, for a class and cause first seen since, its rate (Rate
// of the same class, cause and score) is at most the level. It does not
// allocate.
func (c *Calibration) Alerts(class, cause uint64, score, rate float64) bool {
	b := calBin(score)
	if b < 0 {
		return false
	}
	if j := detectors.Slot(c.keys, detectors.PairKey(class, cause), false); j >= 0 {
		if t := c.thr[j].Load(); t != 0 {
			return uint32(b+1) >= t
		}
	}
	return rate <= c.Level()
}

// spent is the alert device-hours per fleet device-hour that level q would
// have raised (see Calibration).
func (c *Calibration) spent(q float64) float64 {
	d := float64(c.hours.Load())
	if d == 0 {
		return 0
	}
	total := 0.0
	for j := range c.meta {
		m := c.meta[j].Load()
		if m == 0 {
			continue
		}
		hj, fj := int(uint32(m))-1, int(m>>32)-1
		dc := float64(c.cum[hj*CalibrationBins].Load())
		for b := range CalibrationBins {
			r := (excess(c.cum[j*CalibrationBins+b].Load()) + calPriorHours*excess(c.cum[fj*CalibrationBins+b].Load())/d) / (dc + calPriorHours)
			if r <= q {
				total += dc / d * r
				break
			}
		}
	}
	return total
}

// solve returns the largest level whose spending is within the budget, by
// bisection over log10(q) in [-9, 0].
func (c *Calibration) solve() float64 {
	if c.spent(1) <= c.budget {
		return 1
	}
	lo, hi := -9.0, 0.0
	if c.spent(math.Pow(10, lo)) > c.budget {
		return 0
	}
	for range 30 {
		mid := (lo + hi) / 2
		if c.spent(math.Pow(10, mid)) <= c.budget {
			lo = mid
		} else {
			hi = mid
		}
	}
	return math.Pow(10, lo)
}

// AppendSnapshot appends the calibration's counts and level to dst: version
// u32 | slots u32 | bins u32 | hours u64 | next u64 | level u64 | keys, meta,
// counts as little-endian words. Take it while workers are stopped for an
// exact copy.
func (c *Calibration) AppendSnapshot(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, calSnapshotV)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(c.keys)))
	dst = binary.LittleEndian.AppendUint32(dst, CalibrationBins)
	dst = binary.LittleEndian.AppendUint64(dst, c.hours.Load())
	dst = binary.LittleEndian.AppendUint64(dst, c.next.Load())
	dst = binary.LittleEndian.AppendUint64(dst, c.level.Load())
	return detectors.AppendWords(dst, c.keys, c.meta, c.cum)
}

// LoadSnapshot replaces the calibration's contents with a snapshot of
// AppendSnapshot. A snapshot of another version or size is an error, and
// the calibration is then unchanged (it relearns: a cold start warms up
// again).
func (c *Calibration) LoadSnapshot(b []byte) error {
	if len(b) < 36 {
		return fmt.Errorf("cannot load calibration: %d bytes", len(b))
	}
	le := binary.LittleEndian
	if v, n, bins := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:]); v != calSnapshotV || int(n) != len(c.keys) || bins != CalibrationBins {
		return fmt.Errorf("cannot load calibration: version %d of %d slots and %d bins, this build reads version %d of %d and %d",
			v, n, bins, calSnapshotV, len(c.keys), CalibrationBins)
	}
	if err := detectors.LoadWords(b[36:], c.keys, c.meta, c.cum); err != nil {
		return fmt.Errorf("cannot load calibration: %w", err)
	}
	c.hours.Store(le.Uint64(b[12:]))
	c.next.Store(le.Uint64(b[20:]))
	c.level.Store(le.Uint64(b[28:]))
	for j := range c.thr {
		c.thr[j].Store(0)
	}
	if c.budget > 0 && c.Ready() {
		c.setLevel(c.solve()) // the budget may differ from the run that saved it
	}
	return nil
}
