package decide

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

// stateScenario is a flood of ten devices over two hours: alerts within and
// beyond cool-downs, a block per device, repeat offenders with doubled TTLs,
// and some devices sharing an IP (the block scope of the api_key ones is the
// key, of the others the device).
func stateScenario() []struct {
	ev *schemas.Event
	s  *schemas.Scored
} {
	var out []struct {
		ev *schemas.Event
		s  *schemas.Scored
	}
	for at := time.Duration(0); at < 2*time.Hour; at += 20 * time.Second {
		for d := range 10 {
			f := flood
			if (int(at/time.Minute)+d)%7 == 0 {
				f.Score = 0.64 // an alert at another severity, no block
			}
			s := scored(f)
			if d%3 == 0 {
				s = scored(f, abroad) // a stolen key: the block is the key's
			}
			ev := event(fmt.Sprint("d-", d), fmt.Sprint("k-", d), fmt.Sprint("203.0.113.", d%4), at+time.Duration(d)*time.Millisecond)
			ev.ID = uint64(len(out) + 1)
			out = append(out, struct {
				ev *schemas.Event
				s  *schemas.Scored
			}{ev, s})
		}
	}
	return out
}

// outcome is what Decide returned, as ids.
func outcome(a *schemas.Alert, d *schemas.Decision) string {
	var b strings.Builder
	if a != nil {
		b.WriteString(a.ID)
	}
	if d != nil {
		fmt.Fprintf(&b, " %s %s %s", d.ID, d.Action, d.ExpiresAt.Format(time.RFC3339))
	}
	return b.String()
}

// TestStateRestoreContinues: an engine restored from a snapshot taken
// mid-stream decides the rest of the stream exactly as the engine that was
// never stopped (same alert and decision ids, same TTLs: the strikes
// survive), and a restart without the snapshot does not (the test can fail).
// With the worker count changed (2 engines saved, 3 restored, each keeping
// the devices its worker owns), the same holds.
func TestStateRestoreContinues(t *testing.T) {
	steps := stateScenario()
	const cut = 1000
	run := func(engines []*Engine, from, to int, out []string) {
		for i := from; i < to; i++ {
			e := engines[shard.Of(steps[i].ev.DeviceKey, len(engines))]
			s := *steps[i].s
			out[i] = outcome(e.Decide(steps[i].ev, &s))
		}
	}
	fresh := func(n int) []*Engine {
		var es []*Engine
		for range n {
			es = append(es, engine(t, func(c *Config) { c.MaxBlocksPerMinute = 0 }))
		}
		return es
	}
	want := make([]string, len(steps))
	run(fresh(1), 0, len(steps), want)

	f := func(name string, saved, restored int, snapshot bool) (differ int) {
		t.Helper()
		got := make([]string, len(steps))
		before := fresh(saved)
		run(before, 0, cut, got)
		after := fresh(restored)
		if snapshot {
			for j, e := range before {
				snap := e.AppendState(nil)
				for i, r := range after {
					var owns func(uint64) bool // the same worker count: engine j is engine j
					if saved != restored {
						owns = func(d uint64) bool { return shard.Of(d, restored) == i }
					} else if i != j {
						continue
					}
					if err := r.LoadState(snap, owns); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
				}
			}
		}
		run(after, cut, len(steps), got)
		for i := cut; i < len(steps); i++ {
			if got[i] != want[i] {
				if differ++; differ <= 3 && snapshot {
					t.Errorf("%s: step %d: %q, uninterrupted %q", name, i, got[i], want[i])
				}
			}
		}
		return differ
	}
	f("one engine, restored", 1, 1, true)
	f("two engines restored as three", 2, 3, true)
	f("three engines restored as one", 3, 1, true)
	if f("one engine, restarted empty", 1, 1, false) == 0 {
		t.Error("an engine restarted without its state decided as the uninterrupted one: the scenario tests nothing")
	}
}

// TestStateDeterministic: the same state gives the same bytes, and a
// snapshot loaded into a fresh engine is saved back unchanged.
func TestStateDeterministic(t *testing.T) {
	e := engine(t, func(c *Config) { c.MaxBlocksPerMinute = 0 })
	for _, st := range stateScenario()[:500] {
		e.Decide(st.ev, st.s)
	}
	snap := e.AppendState(nil)
	if !bytes.Equal(snap, e.AppendState(nil)) {
		t.Fatal("two snapshots of one state differ")
	}
	r := engine(t, nil)
	if err := r.LoadState(snap, nil); err != nil {
		t.Fatal(err)
	}
	if got := r.AppendState(nil); !bytes.Equal(got, snap) {
		t.Errorf("a restored engine saves %d bytes, the original %d: not the same state", len(got), len(snap))
	}
	if len(e.cooled) == 0 || len(e.blocks) == 0 || len(e.blocked) == 0 {
		t.Errorf("scenario left %d cool-downs, %d blocks, %d blocked devices: want some of each", len(e.cooled), len(e.blocks), len(e.blocked))
	}
}

// TestStateCorrupt: a truncated snapshot, trailing bytes or another version
// are errors, never a panic.
func TestStateCorrupt(t *testing.T) {
	e := engine(t, func(c *Config) { c.MaxBlocksPerMinute = 0 })
	for _, st := range stateScenario()[:200] {
		e.Decide(st.ev, st.s)
	}
	snap := e.AppendState(nil)
	for n := range len(snap) {
		if err := engine(t, nil).LoadState(snap[:n], nil); err == nil {
			t.Fatalf("a snapshot cut to %d of %d bytes loaded", n, len(snap))
		}
	}
	if err := engine(t, nil).LoadState(append(bytes.Clone(snap), 0), nil); err == nil {
		t.Error("a snapshot with a trailing byte loaded")
	}
	other := bytes.Clone(snap)
	other[0] = 9
	if err := engine(t, nil).LoadState(other, nil); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Errorf("version 9: %v", err)
	}
}
