package command

import (
	"encoding/binary"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// newTestStats returns empty statistics over a fresh class table.
func newTestStats(commands, classes int) *Stats {
	return NewStats(detectors.NewClassTable(commands, classes))
}

// learn teaches s and its class table ev, from a device whose previous
// command was prev (0: none), as a ClassModel does after Observe.
func (s *Stats) learn(ev *schemas.Event, prev uint64) {
	s.classes.Learn(ev)
	var before [StateSize]byte
	binary.LittleEndian.PutUint64(before[lastOff:], prev)
	s.Learn(ev, before[:])
}

// TestStatsSnapshot: commands, transitions and argument ranges survive a
// snapshot round trip; another version or size is refused and leaves the
// statistics unchanged.
func TestStatsSnapshot(t *testing.T) {
	tab, ev := paramFleet(400)
	prev := ev.CommandID
	ev.SetCommand([]byte("POST /v1/thermostats/{id}/reset"))
	tab.learn(ev, prev)
	other := schemas.Hash2([]byte("acme"), []byte("someone-else"))
	snap := tab.AppendSnapshot(nil)
	back := NewStats(tab.classes)
	if err := back.LoadSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if a, b := tab.ClassCommandDevices(ev.ClassKey, ev.CommandID, other), back.ClassCommandDevices(ev.ClassKey, ev.CommandID, other); a != b || a == 0 {
		t.Errorf("command devices after a round trip: %v, before %v", b, a)
	}
	if a, b := tab.ClassTransitionDevices(ev.ClassKey, prev, ev.CommandID, other), back.ClassTransitionDevices(ev.ClassKey, prev, ev.CommandID, other); a != b || a == 0 {
		t.Errorf("transition devices after a round trip: %v, before %v", b, a)
	}
	_, set := paramFleet(400)
	if a, b := tab.ClassParam(set.ClassKey, set.CommandID, set.Args[0].Key), back.ClassParam(set.ClassKey, set.CommandID, set.Args[0].Key); a != b || !a.Ready() {
		t.Errorf("argument range after a round trip: %+v, before %+v (want a ready one)", b, a)
	}
	fresh := newTestStats(1024, 1024)
	if err := fresh.LoadSnapshot(append(binary.LittleEndian.AppendUint32(nil, statsVersion+1), snap[4:]...)); err == nil {
		t.Errorf("a snapshot of version %d loaded", statsVersion+1)
	}
	if err := newTestStats(4096, 1024).LoadSnapshot(snap); err == nil {
		t.Errorf("a snapshot of 1024 command slots loaded into statistics of 4096")
	}
	if err := fresh.LoadSnapshot(snap[:len(snap)-8]); err == nil {
		t.Errorf("a truncated snapshot loaded")
	}
	if fresh.ClassCommandDevices(ev.ClassKey, ev.CommandID, other) != 0 {
		t.Errorf("a refused snapshot changed the statistics")
	}
}
