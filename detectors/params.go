package detectors

import (
	"math"
	"math/bits"
	"sync/atomic"

	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters of the argument range model.
const (
	// ParamK is the half-width of the normal range in scales: a value further
	// than ParamK·Scale from the center is out of range.
	ParamK = 8.0
	// ParamMinEvents and ParamMinDevices: a range is judged (Ready) once this
	// many in-range values from this many distinct devices (estimated) taught it.
	ParamMinEvents  = 50
	ParamMinDevices = 5
	// ParamShiftDevices: when this many distinct devices (estimated) sent
	// out-of-range values since the range last restarted or
	// ParamShiftWindow events ago, the class has moved (a firmware that
	// reports in Fahrenheit), not one attacker: the range restarts from
	// scratch. One device, however many values it sends, cannot.
	ParamShiftDevices = 8
	ParamShiftWindow  = 4096
	// ParamFastEvents: the first values teach the center and scale as running
	// means; later ones as a streaming median (sign steps of ParamRate·Scale)
	// and an exponentially weighted mean absolute deviation (ParamScaleRate).
	ParamFastEvents = 32
	ParamRate       = 1.0 / 32
	ParamScaleRate  = 1.0 / 64
	// ParamRelFloor and ParamAbsFloor floor the scale, relative to the center
	// and absolutely, so that an argument that is always the same value
	// (interval=60) has a range (±16% of it at ParamK).
	ParamRelFloor = 0.02
	ParamAbsFloor = 1e-3
	// paramMaxAbs bounds learned values (they are stored as float32).
	paramMaxAbs = 1e30
)

// ParamRange is what a ParamTable knows of one (class, command, argument).
type ParamRange struct {
	Center  float64 // streaming median of the values learned
	Scale   float64 // mean absolute deviation from Center, floored (ParamRelFloor, ParamAbsFloor); > 0 when Events > 0
	Events  uint64  // values learned (in range, or before the range was Ready)
	Devices float64 // estimated distinct devices that taught it
}

// Ready reports whether the range has enough history to judge a value.
func (r ParamRange) Ready() bool {
	return r.Events >= ParamMinEvents && r.Devices >= ParamMinDevices
}

// Judge returns 0, 0 when the range is not Ready or x is within it, else how
// far x is from the center in scales (> ParamK) and the bound it crossed.
func (r ParamRange) Judge(x float64) (z, bound float64) {
	d := x - r.Center
	if !r.Ready() || !(math.Abs(d) > ParamK*r.Scale) || r.Scale <= 0 {
		return 0, 0
	}
	bound = r.Center + ParamK*r.Scale
	if d < 0 {
		bound = r.Center - ParamK*r.Scale
	}
	return math.Abs(d) / r.Scale, bound
}

// ParamTable learns, per (class, command, argument name), the normal range of
// a command's numeric argument (schemas.Event.Args): a streaming median and
// mean absolute deviation, the number of values learned and a 64-bit sketch
// of the devices that taught them. Values out of a Ready range are not
// learned, so an attacker cannot widen it; instead a 64-bit sketch counts the
// devices that sent them, and a range that ParamShiftDevices devices
// contradict restarts (the class changed). The table is fixed-size and
// open-addressed (64 bytes per slot): when it is full new keys are not
// learned (Saturated counts them) and their arguments are not judged.
//
// Learn is safe for concurrent use: each word is updated atomically (the
// center and scale together, by compare-and-swap); concurrent learners of
// one key may interleave, and the result is deterministic given one order of
// Learn calls.
//
// A slot's words are packed in one 64-byte cache line (packedSlots), so
// that a look-up and what it reads after the key miss the caches once.
// Snapshots still hold one column per word (AppendWords), as when each had
// its array.
type ParamTable struct {
	slots     packedSlots // pWords words per slot, in a cache line: pKey..pOuts
	saturated atomic.Uint64
}

// A ParamTable slot's words, in the order of the snapshot's columns.
const (
	pKey    = iota // the key, as Slot keeps it (0: empty)
	pStats         // center (float32 bits) << 32 | scale (float32 bits), unfloored
	pEvents        // values learned
	pDevs          // sketch of devices that taught the range
	pOuts          // sketch of devices that sent out-of-range values
	pWords         // words a slot holds, and columns of the snapshot
)

// NewParamTable returns a table of slots (class, command, argument) keys,
// rounded up to a power of two (at least 1024).
func NewParamTable(slots int) *ParamTable {
	return &ParamTable{slots: newPackedSlots(slots, pWords, 8)}
}

// word returns word k (pKey..pOuts) of slot j.
func (t *ParamTable) word(j, k int) *atomic.Uint64 { return t.slots.word(j, k) }

// slot returns key's slot (packedSlots.slot).
func (t *ParamTable) slot(key uint64, insert bool) int { return t.slots.slot(key, insert) }

// paramKey mixes differently from pairKey and transitionKey.
func paramKey(class, command, name uint64) uint64 {
	k := (command*0x94d049bb133111eb ^ name) * 0xbf58476d1ce4e5b9
	return (class ^ k ^ k>>31) * 0x9e3779b97f4a7c15
}

// ClassParam returns the range learned for the argument name of command in
// class; the zero ParamRange if none.
func (t *ParamTable) ClassParam(class, command, name uint64) ParamRange {
	j := t.slot(paramKey(class, command, name), false)
	if j < 0 {
		return ParamRange{}
	}
	return t.load(j)
}

func (t *ParamTable) load(j int) ParamRange {
	c, s, ok := unpackStats(t.word(j, pStats).Load())
	if !ok {
		return ParamRange{} // a corrupt snapshot: no history
	}
	r := ParamRange{Center: c, Events: t.word(j, pEvents).Load()}
	if r.Events > 0 {
		r.Scale = floorScale(c, s)
	}
	r.Devices = LinearCount(64, bits.OnesCount64(t.word(j, pDevs).Load())) // a table look-up
	return r
}

// floorScale is max(s, ParamRelFloor·|c|, ParamAbsFloor), the floored
// scale, for the c and s unpackStats accepts (finite, s >= 0): the result is
// at least ParamAbsFloor > 0, so plain comparisons give the builtin max's
// value without its NaN and signed-zero handling (TestParamArithmetic).
func floorScale(c, s float64) float64 {
	f := ParamRelFloor * math.Abs(c)
	if f < ParamAbsFloor {
		f = ParamAbsFloor
	}
	if s > f {
		return s
	}
	return f
}

func packStats(c, s float64) uint64 {
	return uint64(math.Float32bits(float32(c)))<<32 | uint64(math.Float32bits(float32(s)))
}

// unpackStats reverses packStats; ok is false for values no Learn stores (a
// corrupt snapshot).
func unpackStats(w uint64) (c, s float64, ok bool) {
	c, s = float64(math.Float32frombits(uint32(w>>32))), float64(math.Float32frombits(uint32(w)))
	return c, s, math.Abs(c) <= paramMaxAbs && s >= 0 && s <= paramMaxAbs
}

// Learn teaches the table ev's numeric arguments, unless they are out of
// their Ready range.
func (t *ParamTable) Learn(ev *schemas.Event) {
	for _, a := range ev.ArgList() {
		if !(math.Abs(a.Value) <= paramMaxAbs) {
			continue
		}
		j := t.slot(paramKey(ev.ClassKey, ev.CommandID, a.Key), true)
		if j < 0 {
			t.saturated.Add(1)
			continue
		}
		t.learn(j, a.Value, ParamK, ev.DeviceKey)
	}
}

// LearnValue teaches the range of (class, command, name) the value x of
// device (a DeviceKey), for a quantity that is no argument of the event (a
// response's size, see package command), more guardedly than an argument:
// a value more than learnK scales from the center of a Ready range is not
// learned, and counts as contradicting it (ParamShiftDevices), as one out
// of it does. A device that repeats values between learnK and ParamK scales
// (a download growing, response by response, before it is out of range)
// then cannot widen the range it will be judged against; a class whose
// devices all moved restarts it.
func (t *ParamTable) LearnValue(class, command, name uint64, x, learnK float64, device uint64) {
	if !(math.Abs(x) <= paramMaxAbs) {
		return
	}
	j := t.slot(paramKey(class, command, name), true)
	if j < 0 {
		t.saturated.Add(1)
		return
	}
	t.learn(j, x, min(learnK, ParamK), device)
}

// learn teaches slot j the value x unless it is more than learnK (at most
// ParamK) scales from the center of a Ready range.
func (t *ParamTable) learn(j int, x, learnK float64, device uint64) {
	stats, events, devs, outs := t.word(j, pStats), t.word(j, pEvents), t.word(j, pDevs), t.word(j, pOuts)
	if r := t.load(j); r.Ready() && r.Scale > 0 && math.Abs(x-r.Center) > learnK*r.Scale {
		SetBit(outs, DeviceBit(device))
		if LinearCount(64, bits.OnesCount64(outs.Load())) >= ParamShiftDevices {
			stats.Store(0)
			events.Store(0)
			devs.Store(0)
			outs.Store(0)
		}
		return
	}
	n := events.Add(1)
	if n%ParamShiftWindow == 0 {
		outs.Store(0) // out-of-range devices count over a window, not forever
	}
	SetBit(devs, DeviceBit(device))
	for {
		old := stats.Load() // again: read just before the swap, as concurrent learners of j swap it too
		c, s, ok := unpackStats(old)
		switch {
		case n == 1 || !ok:
			c, s = x, 0
		case n <= ParamFastEvents:
			c += (x - c) / float64(n)
			s += (math.Abs(x-c) - s) / float64(n)
		default:
			step := ParamRate * floorScale(c, s)
			c = stepToward(c, step, x)
			s += ParamScaleRate * (math.Abs(x-c) - s)
		}
		if stats.CompareAndSwap(old, packStats(c, s)) {
			return
		}
	}
}

// stepToward moves c a step (> 0) towards x, not past it: for x > c
// min(c+step, x), for x < c max(c-step, x), as the builtins give them for
// finite c and x, written as comparisons: c±step is never -0 (an exact zero
// sum is +0), and a tie keeps the builtins' zero, x for min and c-step for
// max (TestParamArithmetic).
func stepToward(c, step, x float64) float64 {
	switch {
	case x > c:
		if u := c + step; u < x {
			return u
		}
		return x
	case x < c:
		if u := c - step; !(u < x) {
			return u
		}
		return x
	}
	return c
}

// Saturated returns how many values found the table full.
func (t *ParamTable) Saturated() uint64 { return t.saturated.Load() }

// Words is how many words AppendWords appends: pWords columns of one word
// per slot.
func (t *ParamTable) Words() int { return t.slots.words() }

// AppendWords appends the table's words to dst as the columns of its slots
// (their keys, then the stats, events, devices and out-of-range sketches),
// each little-endian in slot order: the encoding of AppendWords of the
// arrays the table held, one per column, before its slots were packed.
// Concurrent learning may or may not be included; take it while workers are
// stopped for an exact copy.
func (t *ParamTable) AppendWords(dst []byte) []byte { return t.slots.appendWords(dst) }

// LoadWords replaces the table's contents with words AppendWords wrote for
// a table of the same size; b of another length is an error, and the table
// is then unchanged.
func (t *ParamTable) LoadWords(b []byte) error { return t.slots.loadWords(b, "argument ranges") }
