package decide

import (
	"testing"
	"time"
)

// TestExpiryFromDecisionTime: a block decided on an event that is processed
// late (a backfill, a lagging pipeline) expires a TTL after it was decided,
// not a TTL after its event, which would publish it already expired; an
// event from the future of the wall clock keeps its own time; without a
// clock (replay) the event time alone counts, deterministically.
func TestExpiryFromDecisionTime(t *testing.T) {
	ttl := DefaultConfig().BlockTTL
	evTime := time.Unix(0, t0)
	f := func(now func() time.Time, want time.Time) {
		t.Helper()
		e := engine(t, func(c *Config) { c.Now = now })
		_, d := e.Decide(event("d-1", "k", "203.0.113.1", 0), scored(flood))
		if d == nil {
			t.Fatal("no decision")
		}
		if !d.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v", d.ExpiresAt, want)
		}
		if !d.CreatedAt.Equal(evTime) {
			t.Errorf("CreatedAt = %v, want the event time %v", d.CreatedAt, evTime)
		}
	}
	late := evTime.Add(3 * time.Hour) // processed three hours after the event
	f(func() time.Time { return late }, late.Add(ttl))
	early := evTime.Add(-time.Minute) // the event's clock is a minute ahead of ours
	f(func() time.Time { return early }, evTime.Add(ttl))
	f(nil, evTime.Add(ttl))
}

// TestTickHoldsTheClock: once the engine's clock is ticked by its worker, a
// future-dated event decided on does not move it, so it does not prune the
// cool-downs of the present: a repeat alert stays suppressed.
func TestTickHoldsTheClock(t *testing.T) {
	e := engine(t, nil)
	e.Tick(t0)
	if a, _ := e.Decide(event("d-1", "k", "203.0.113.1", 0), scored(abroad)); a == nil {
		t.Fatal("no first alert")
	}
	e.Tick(t0 + int64(time.Second))
	// Another device's event stamped two days ahead (beyond ReorderWindow)
	// alerts; it must not prune.
	e.Decide(event("d-2", "k2", "203.0.113.2", 2*ReorderWindow), scored(abroad))
	e.Tick(t0 + int64(2*time.Second))
	if a, _ := e.Decide(event("d-1", "k", "203.0.113.1", 2*time.Second), scored(abroad)); a != nil {
		t.Errorf("a repeat alert within the cool-down was raised after a future-dated event: %+v", a)
	}
}
