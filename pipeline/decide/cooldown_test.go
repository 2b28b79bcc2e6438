package decide

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestCooldownOutOfOrder: the cool-down holds for events that arrive after an
// alert but are stamped before it (the rule is written in cooldown.go).
func TestCooldownOutOfOrder(t *testing.T) {
	low := flood
	low.Score = 0.64 // an alert, no block: only the cool-down decides
	type step struct {
		at    time.Duration
		alert bool
	}
	f := func(name string, steps ...step) {
		t.Helper()
		e := engine(t, nil) // 5m cool-down
		for i, s := range steps {
			a, _ := e.Decide(event("d-1", "k", "203.0.113.1", s.at), scored(low))
			if (a != nil) != s.alert {
				t.Errorf("%s: step %d (event at %v): alert = %v, want %v", name, i, s.at, a != nil, s.alert)
			}
		}
	}
	// A suppressed repeat extends the group to a cool-down after it: a run of
	// findings less than a cool-down apart is one alert group.
	f("in order", step{0, true}, step{4 * time.Minute, false}, step{8 * time.Minute, false}, step{13*time.Minute + time.Second, true})
	f("late, within the cool-down before the alert",
		step{10 * time.Minute, true}, step{6 * time.Minute, false}, step{5*time.Minute + time.Second, false})
	f("late, a cool-down or more before the alert",
		step{10 * time.Minute, true}, step{5 * time.Minute, true}, step{3 * time.Minute, false}, step{-3 * time.Minute, true})
	f("late, between two alerts' cool-downs",
		step{0, true}, step{20 * time.Minute, true}, step{10 * time.Minute, true}, step{13 * time.Minute, false}, step{7 * time.Minute, false})
	f("a run of alerts covers its whole span",
		step{0, true}, step{5 * time.Minute, true}, step{10 * time.Minute, true}, step{2 * time.Minute, false}, step{7 * time.Minute, false})
	f("behind the reorder window, forgotten",
		step{0, true}, step{ReorderWindow + 10*time.Minute, true}, step{time.Minute, true})
	e := engine(t, func(c *Config) { c.Cooldown = 0 })
	for i := range 3 {
		if a, _ := e.Decide(event("d-1", "k", "203.0.113.1", time.Duration(2-i)*time.Second), scored(low)); a == nil {
			t.Errorf("cool-down 0: event %d did not alert", i)
		}
	}
}

// TestCooldownShuffled: a flood alerting every 10 s for an hour is one alert
// group in time order (each repeat extends it); in any order, its alerts are
// at least a cool-down apart and no more than an alert every cool-down.
func TestCooldownShuffled(t *testing.T) {
	low := flood
	low.Score = 0.64
	const cd = 5 * time.Minute
	var times []time.Duration
	for at := time.Duration(0); at < time.Hour; at += 10 * time.Second {
		times = append(times, at)
	}
	run := func(order []time.Duration) []time.Duration {
		e := engine(t, nil)
		var alerts []time.Duration
		for _, at := range order {
			if a, _ := e.Decide(event("d-1", "k", "203.0.113.1", at), scored(low)); a != nil {
				alerts = append(alerts, at)
			}
		}
		slices.Sort(alerts)
		return alerts
	}
	sorted := run(times)
	if len(sorted) != 1 {
		t.Errorf("in time order: %d alerts, want 1 (one group)", len(sorted))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, shuffle := range []struct {
		name string
		swap func([]time.Duration)
	}{
		{"fully shuffled", func(ts []time.Duration) { r.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] }) }},
		{"jittered by up to 2m", func(ts []time.Duration) {
			key := make(map[time.Duration]time.Duration, len(ts))
			for _, at := range ts {
				key[at] = at + time.Duration(r.Int64N(int64(2*time.Minute)))
			}
			slices.SortStableFunc(ts, func(a, b time.Duration) int { return int(key[a] - key[b]) })
		}},
		{"three files concatenated", func(ts []time.Duration) {
			var parts [3][]time.Duration
			for _, at := range ts {
				i := r.IntN(3)
				parts[i] = append(parts[i], at)
			}
			copy(ts, slices.Concat(parts[0], parts[1], parts[2]))
		}},
	} {
		order := slices.Clone(times)
		shuffle.swap(order)
		alerts := run(order)
		for i := 1; i < len(alerts); i++ {
			if alerts[i]-alerts[i-1] < cd {
				t.Errorf("%s: alerts at %v and %v, closer than the cool-down", shuffle.name, alerts[i-1], alerts[i])
			}
		}
		if max := int(time.Hour / cd); len(alerts) > max {
			t.Errorf("%s: %d alerts, more than one every cool-down (%d)", shuffle.name, len(alerts), max)
		}
		t.Logf("%s: %d alerts (in time order %d)", shuffle.name, len(alerts), len(sorted))
	}
}

func TestCooldownSpansBounded(t *testing.T) {
	var c cooldown
	cd := int64(time.Minute)
	for i := range 3 * maxCoverSpans {
		c.add(int64(i)*10*cd, cd) // disjoint
	}
	if c.n != maxCoverSpans {
		t.Fatalf("spans = %d, want the bound %d", c.n, maxCoverSpans)
	}
	if c.covers(0) || !c.covers(int64(3*maxCoverSpans-1)*10*cd) {
		t.Errorf("the earliest span must be forgotten first, the latest kept")
	}
	c.add(5*cd, cd) // no merge with neighbours 10 cd apart
	if c.prune(1<<62) != 0 || c.n != 0 {
		t.Errorf("prune past every span left %d", c.n)
	}
}
