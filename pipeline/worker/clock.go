package worker

import (
	"math"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// The worker's event-time clock drives the silence sweep and its decision
// engine's pruning (decide.Engine.Tick). It is the largest event time the
// worker has seen, except that no single event moves it far ahead: a line
// stamped a day ahead (a broken clock, a forgery, a replayed file's odd
// line) would otherwise sweep every device of the worker as silent at once
// and prune every cool-down.
//
// An event moves the clock to its time when that is at most DefaultClockStep
// (Config.ClockStep) after the clock. A time farther ahead moves it only
// when corroborated: by a second device that has reached that far too (the
// clock is never behind the second-largest time of distinct devices), or by
// the same device's own events going on ahead for a ClockStep of their own
// time (a lone device back after a gap). So a whole fleet back after an
// outage moves the clock at the second device's event, and a single
// future-dated line moves nothing. Deterministic: it depends on the events
// and their order only.
//
// Before the first event the clock is unset (math.MinInt64); the first event
// sets it. Ingest bounds live event times against their arrival
// (schemas.ClampEventTime), so on the live path this guard matters within
// that bound and for the first event after a restart; replayed files have no
// arrival time and rely on it alone.

// DefaultClockStep is the default of Config.ClockStep: one sweep period.
const DefaultClockStep = SweepEvery

// eventClock is the worker's robust event-time clock.
type eventClock struct {
	now  int64 // the clock
	step int64 // Config.ClockStep, ns

	// The largest time of any device (t1, of device k1) and the largest time
	// of any other device (t2).
	t1, t2 int64
	k1     [2]uint64
	// A run of one device's events ahead of the clock: its device and the
	// time of the first.
	held   bool
	hk     [2]uint64
	hStart int64
}

func newEventClock(step time.Duration) eventClock {
	if step <= 0 {
		step = DefaultClockStep
	}
	return eventClock{now: math.MinInt64, step: int64(step), t1: math.MinInt64, t2: math.MinInt64}
}

// observe moves the clock for an event of device k at time t.
func (c *eventClock) observe(k [2]uint64, t int64) {
	switch {
	case k == c.k1 && c.t1 != math.MinInt64:
		c.t1 = max(c.t1, t)
	case t > c.t1:
		c.t2, c.t1, c.k1 = c.t1, t, k
	default:
		c.t2 = max(c.t2, t)
	}
	switch {
	case c.now == math.MinInt64 || t <= c.now+c.step:
		c.now = max(c.now, t)
		if c.held && c.hk == k {
			c.held = false // the device is back in step: its run ahead ended
		}
	case c.held && c.hk == k && t-c.hStart >= c.step:
		c.now, c.held = t, false // the device's own run ahead lasted a step
	case c.held && c.hk == k:
		c.hStart = min(c.hStart, t)
	default:
		c.held, c.hk, c.hStart = true, k, t
	}
	c.now = max(c.now, c.t2) // two devices got that far
}

// advanceClock moves the worker's clock for ev and passes it on to the
// decision engine.
func (w *Worker) advanceClock(ev *schemas.Event) {
	w.clk.observe([2]uint64{ev.DeviceKey, ev.DeviceAlt}, ev.Time)
	w.engine.Tick(w.clk.now)
}

// Clock returns the worker's event-time clock (Unix ns; math.MinInt64 before
// the first event): the largest event time it has seen, except for times far
// ahead that no second device or run of events corroborates (see
// Config.ClockStep).
func (w *Worker) Clock() int64 { return w.clk.now }
