package decide

import "time"

// The cool-down rule. Two alerts for one device, reason and severity are at
// least Config.Cooldown apart in event time, whatever order their events
// arrive in: an alert at time a covers the open interval (a-Cooldown,
// a+Cooldown), and an event inside the interval of an earlier alert is a
// repeat. With events in time order this is the classic rule (a repeat within
// Cooldown after the last alert is suppressed); with times that go backwards
// (files of several gateways concatenated, request-start timestamps written at
// request end, a shipper catching up) a late event stamped shortly before an
// alert it arrives after is a repeat of that alert too, instead of a new one.
//
// The memory is bounded in two ways. Alerts are remembered for ReorderWindow of
// event time after the latest event the engine has decided on, so an event
// that arrives later than that behind its alert's time may alert again. And per
// device, reason and severity at most maxCoverSpans disjoint spans of covered
// time are kept (an uninterrupted run of alerts at most 2·Cooldown apart is one
// span); beyond that the span that ends earliest is forgotten.
//
// Redelivered events obey the same rule: an event redelivered within the
// cool-down of its own alert does not alert again (which ARCHITECTURE.md's
// redelivery contract allows: the alerts of the first time, or none).

// ReorderWindow is how far behind the latest event time an event may arrive
// and still be held to the cool-downs of alerts at later times.
const ReorderWindow = 24 * time.Hour

// maxCoverSpans bounds the disjoint spans of covered time a cool-down keeps.
const maxCoverSpans = 8

// cooldown is the event time covered by the alerts of one device, reason and
// severity: up to maxCoverSpans disjoint open intervals (lo, hi), in no order.
// It is a value (no pointers), so the engine's map is not scanned by the GC.
type cooldown struct {
	n     uint8
	sev   uint8  // the highest severity rank (sevRank) the group was alerted at
	group uint64 // the alert group: the hash of the ID of the alert that opened it (0: unknown)
	first uint64 // the event that opened the group
	spans [maxCoverSpans]struct{ lo, hi int64 }
}

// covers reports whether t is inside a covered interval (a repeat).
func (c *cooldown) covers(t int64) bool {
	for i := range c.n {
		if s := &c.spans[i]; s.lo < t && t < s.hi {
			return true
		}
	}
	return false
}

// add records an alert at t, covering (t-cd, t+cd): it merges the spans that
// overlap the new interval into one, and forgets the earliest-ending span when
// no slot is free. A zero cd covers nothing.
func (c *cooldown) add(t, cd int64) {
	if cd <= 0 {
		return
	}
	c.addSpan(t-cd, t+cd)
}

// addSpan covers the open interval (lo, hi) as add does (a restored
// checkpoint's spans, state.go); an empty interval covers nothing.
func (c *cooldown) addSpan(lo, hi int64) {
	if hi <= lo {
		return
	}
	for i := 0; i < int(c.n); {
		s := c.spans[i]
		if lo < s.hi && s.lo < hi {
			lo, hi = min(lo, s.lo), max(hi, s.hi)
			c.n--
			c.spans[i] = c.spans[c.n]
			continue
		}
		i++
	}
	if int(c.n) == maxCoverSpans {
		oldest := 0
		for i := 1; i < int(c.n); i++ {
			if c.spans[i].hi < c.spans[oldest].hi {
				oldest = i
			}
		}
		c.n--
		c.spans[oldest] = c.spans[c.n]
	}
	c.spans[c.n].lo, c.spans[c.n].hi = lo, hi
	c.n++
}

// prune forgets the spans that end before horizon and returns how many remain.
func (c *cooldown) prune(horizon int64) int {
	for i := 0; i < int(c.n); {
		if c.spans[i].hi < horizon {
			c.n--
			c.spans[i] = c.spans[c.n]
			continue
		}
		i++
	}
	return int(c.n)
}
