package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// learnRates teaches t devices of one class, each sending one request every
// gap(i) seconds for an hour, and returns the class key.
func learnRates(t *ClassTable, class string, devices int, gap func(i int) float64) uint64 {
	var ev schemas.Event
	ev.SetClass([]byte(class))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	const start = int64(1736121600e9)
	for i := range devices {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
		step := int64(gap(i) * 1e9)
		for tm := start + int64(i)*1e6; tm < start+3600e9; tm += step {
			ev.Time = tm
			t.Learn(&ev)
		}
	}
	ev.SetDevice([]byte("acme"), []byte("d-0"))
	return ev.ClassKey
}

// TestClassRate: the class rate is a sampled device's typical rate, 0 for an
// unknown or too small class, and a few devices flooding at 50 times the rate
// do not drag it up.
func TestClassRate(t *testing.T) {
	tab := NewClassTable(1024, 1024)
	class := learnRates(tab, "meter/x", 200, func(i int) float64 { return 60 + float64(i%7) })
	got := tab.ClassRate(class)
	if want := 1.0 / 63; math.Abs(got-want) > want*0.1 {
		t.Errorf("class of 200 devices at one request a minute: rate %v/s, want %v within 10%%", got, want)
	}
	if r := tab.ClassRate(class ^ 1); r != 0 {
		t.Errorf("unknown class: rate %v, want 0", r)
	}
	small := learnRates(tab, "lock/x", 2, func(int) float64 { return 60 })
	if r := tab.ClassRate(small); r != 0 {
		t.Errorf("class of 2 devices: rate %v, want 0 (not established)", r)
	}

	// 10 of 200 devices flooding at 50x.
	flooded := NewClassTable(1024, 1024)
	class = learnRates(flooded, "meter/x", 200, func(i int) float64 {
		if i%20 == 0 {
			return 60.0 / 50
		}
		return 60 + float64(i%7)
	})
	if f := flooded.ClassRate(class); !(f < got*1.5) {
		t.Errorf("class with 10 of 200 devices flooding at 50x: rate %v/s, want under 1.5x the normal class's %v", f, got)
	}
	if a := testing.AllocsPerRun(100, func() { flooded.ClassRate(class) }); a != 0 {
		t.Errorf("ClassRate allocates %v times; want 0", a)
	}
}

// TestClassSnapshotVersions: a snapshot round trip keeps class rates; older
// versions (1: no geo arrays, 2: no rate samples) load with the arrays they
// lack empty, clearing what the table held; unknown versions and wrong sizes
// are refused.
func TestClassSnapshotVersions(t *testing.T) {
	tab := NewClassTable(1024, 1024)
	class := learnRates(tab, "meter/x", 50, func(int) float64 { return 30 })
	// An argument range of the class (version 4).
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/set"))
	for i := range 200 {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i%10))
		ev.NArgs = 0
		ev.SetArg([]byte("temp"), 20+float64(i%5))
		tab.Learn(&ev)
	}
	param := func(tab *ClassTable) ParamRange { return tab.ClassParam(ev.ClassKey, ev.CommandID, ev.Args[0].Key) }
	snap := tab.AppendSnapshot(nil)
	back := NewClassTable(1024, 1024)
	if err := back.LoadSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if a, b := tab.ClassRate(class), back.ClassRate(class); a != b || a == 0 {
		t.Errorf("class rate after a round trip: %v, before %v", b, a)
	}
	if a, b := param(tab), param(back); a != b || !a.Ready() {
		t.Errorf("argument range after a round trip: %+v, before %+v (want a ready one)", b, a)
	}

	// An older snapshot: the current one without the arrays that version lacks.
	older := func(v uint32) []byte {
		old := binary.LittleEndian.AppendUint32(nil, v)
		old = append(old, snap[4:20]...)
		for _, arr := range tab.snapshotLayout(v) {
			for i := range arr {
				old = binary.LittleEndian.AppendUint64(old, arr[i].Load())
			}
		}
		return old
	}
	// Version 3 has the class rates but no argument ranges.
	v3 := NewClassTable(1024, 1024)
	if err := v3.LoadSnapshot(older(3)); err != nil {
		t.Fatalf("version 3 snapshot: %v", err)
	}
	if a, b := tab.ClassRate(class), v3.ClassRate(class); a != b {
		t.Errorf("version 3 snapshot: class rate %v, want %v", b, a)
	}
	if r := param(v3); r.Events != 0 {
		t.Errorf("version 3 snapshot: argument range %+v, want none", r)
	}
	for _, v := range []uint32{1, 2} {
		dst := NewClassTable(1024, 1024)
		learnRates(dst, "lock/x", 10, func(int) float64 { return 30 }) // must be cleared by the load
		if err := dst.LoadSnapshot(older(v)); err != nil {
			t.Fatalf("version %d snapshot: %v", v, err)
		}
		if got, want := dst.ClassDevices(class), tab.ClassDevices(class); got != want {
			t.Errorf("version %d snapshot: class devices %v, want %v", v, got, want)
		}
		if r := dst.ClassRate(class); r != 0 {
			t.Errorf("version %d snapshot: class rate %v, want 0 (no samples)", v, r)
		}
	}
	if err := back.LoadSnapshot(append(binary.LittleEndian.AppendUint32(nil, 9), snap[4:]...)); err == nil {
		t.Errorf("a version 9 snapshot loaded")
	}
	if err := back.LoadSnapshot(snap[:len(snap)-8]); err == nil {
		t.Errorf("a truncated snapshot loaded")
	}
	if back.ClassRate(class) != tab.ClassRate(class) {
		t.Errorf("a refused snapshot changed the table")
	}
}
