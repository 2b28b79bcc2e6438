package command

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestClassNoveltyByEventTime: a command (and a transition) the class
// learned from device A at t0+100s only is new to the class for device B at
// t0+50s, judged after A was learned (a scorer behind in event time, or one
// reading another instance's later share): new_class_command, and a
// rare_transition that no other device made; at t0+150s it is A's, known to
// the class (new_command, one other device). The same holds when A was
// learned by another instance (merged and overlaid) and after a snapshot.
func TestClassNoveltyByEventTime(t *testing.T) {
	const t0 = int64(1736121600e9)
	ip := netip.MustParseAddr("192.0.2.10")
	const (
		stateCmd = "POST /v2/devices/th-1/state"
		x        = "POST /v2/devices/th-1/calibrate"
	)
	mk := func(device, cmd string, at int64) *schemas.Event { return thermostatAt(device, cmd, at, ip) }
	// home is a warm device's record at home that issued only its state
	// report.
	home := func(at int64) []byte {
		b := make([]byte, StateSize)
		s := state{first: at - 2*3600e9, n: 200, homeNet: netHash(ip), homeNetCnt: homeNetMax, homeASN: asnHash(3320)}
		s.store(b)
		return b
	}
	prev := mk("d", stateCmd, t0).CommandID
	class := func() *Stats { // 120 devices a day old that issued only their state report
		fleet := newTestStats(1<<12, 1<<10)
		for i := range 120 {
			fleet.learn(mk(fmt.Sprintf("th-%d", i), stateCmd, t0-25*3600e9), 0)
		}
		return fleet
	}
	local := class()
	local.learn(mk("a", x, t0+100e9), prev) // A: x at t0+100s, right after its state report
	// The same class on an instance that did not see A, reading A's
	// instance's share (MergeFrom into an accumulator, SetOverlay).
	merged, share, acc := class(), newTestStats(1<<12, 1<<10), newTestStats(1<<12, 1<<10)
	share.learn(mk("a", x, t0+100e9), prev)
	acc.MergeFrom(share)
	merged.SetOverlay(acc)
	restored := NewStats(local.classes)
	if err := restored.LoadSnapshot(local.AppendSnapshot(nil)); err != nil {
		t.Fatal(err)
	}
	for _, fl := range []struct {
		name  string
		fleet *Stats
	}{{"learned here", local}, {"learned by another instance", merged}, {"after a snapshot", restored}} {
		for _, c := range []struct {
			at         int64
			reason     string
			transition float64 // others that made the step state -> x
		}{
			{t0 + 50e9, ReasonNewClassCommand, 0},
			{t0 + 150e9, ReasonNewCommand, 1},
		} {
			ev := mk("b", x, c.at)
			var d Detector
			f := d.Observe(ev, home(c.at), fl.fleet)
			if f.Reason != c.reason {
				t.Errorf("%s, b at t0+%ds: %s (observed %v), want %s", fl.name, (c.at-t0)/1e9, f.Reason, f.Observed, c.reason)
			}
			var s state
			s.load(home(c.at))
			tf, _ := transition(ev, prev, fl.fleet, lookClass(ev, fl.fleet), s.where(ev), false)
			if tf.Reason != ReasonRareTransition || tf.Observed < c.transition-0.2 || tf.Observed > c.transition+0.2 {
				t.Errorf("%s, b at t0+%ds: transition %s observed %v, want rare_transition observed %v",
					fl.name, (c.at-t0)/1e9, tf.Reason, tf.Observed, c.transition)
			}
		}
	}
}

// TestFirstSeenMin: the earliest time wins whatever the order of learning
// and merging; 0 (none) never does.
func TestFirstSeenMin(t *testing.T) {
	a, b, acc := newFirstSeen(1024), newFirstSeen(1024), newFirstSeen(1024)
	a.learn(7, 300)
	a.learn(7, 100)
	a.learn(7, 200)
	a.learn(7, 0) // not recorded
	b.learn(7, 50)
	b.learn(8, 400)
	if got := a.first(7); got != 100 {
		t.Errorf("first after 300, 100, 200: %d, want 100", got)
	}
	acc.mergeFrom(b)
	acc.mergeFrom(a)
	a.overlay.Store(acc)
	for _, c := range []struct {
		key  uint64
		want int64
	}{{7, 50}, {8, 400}, {9, 0}} {
		if got := a.first(c.key); got != c.want {
			t.Errorf("key %d with the overlay: %d, want %d", c.key, got, c.want)
		}
	}
	if !a.learnedAfter(8, 400) || a.learnedAfter(8, 401) || a.learnedAfter(9, 1) {
		t.Errorf("learnedAfter: equal time must count as new, a later one not, an unknown key is not judged")
	}
}
