package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestFutureLineMovesNoClock: one line stamped 23 hours ahead among a fleet's
// normal traffic (the reproduction) neither moves the worker's clock
// nor makes the sweep report false silences; a whole fleet moving ahead
// (back after an outage) does move it. (The device's own baseline is not
// protected here: in a replay without arrival times its later events still
// count as late ones; live, ingest clamps or dead-letters such a line.)
func TestFutureLineMovesNoClock(t *testing.T) {
	w := newWorker(t, 64)
	var lists [][]*schemas.Event
	for i := range 20 {
		lists = append(lists, every(fmt.Sprintf("m-%02d", i), 10*time.Second, time.Duration(i)*100*time.Millisecond, 3*time.Hour))
	}
	evs := byTime(lists...)
	half := len(evs) / 2
	future := deviceEvent("m-03", time.Duration(evs[half].Time-sweepT0)+23*time.Hour)
	evs = append(evs[:half:half], append([]*schemas.Event{future}, evs[half:]...)...)
	var sc schemas.Scored
	silences := 0
	emit := func(*schemas.Event, *schemas.Scored, *schemas.Alert, *schemas.Decision) { silences++ }
	for i, ev := range evs {
		w.Process(ev, &sc)
		if now, ok := w.SweepDue(); ok {
			w.Sweep(now, emit)
		}
		if i == half && w.Clock() >= future.Time {
			t.Fatalf("the future line moved the clock to %v", time.Unix(0, w.Clock()).UTC())
		}
	}
	if silences != 0 {
		t.Errorf("a future-dated line caused %d silences, want none", silences)
	}
	if last := evs[len(evs)-1].Time; w.Clock() != last {
		t.Errorf("clock %v, want the last normal event's time %v", time.Unix(0, w.Clock()).UTC(), time.Unix(0, last).UTC())
	}
	// The fleet back two hours later: the second device's event moves the clock.
	later := evs[len(evs)-1].Time - sweepT0 + int64(2*time.Hour)
	w.Process(deviceEvent("m-01", time.Duration(later)), &sc)
	w.Process(deviceEvent("m-02", time.Duration(later+1)), &sc)
	if w.Clock() != sweepT0+later+1 {
		t.Errorf("a fleet back after an outage did not move the clock")
	}
}
