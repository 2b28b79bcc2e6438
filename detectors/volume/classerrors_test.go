package volume

import (
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// learnMinute teaches t one request of each of devices devices of class
// "camera/z" at time at (Unix ns), the first failing of them answered with a
// 503, and returns the class key and the key of a device that is not one
// of them.
func learnMinute(t *Stats, devices, failing int, at int64) (class, outsider uint64) {
	var ev schemas.Event
	ev.SetClass([]byte("camera/z"))
	ev.SetCommand([]byte("GET /v1/devices/{id}/config"))
	for i := range devices {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "c-%d", i))
		ev.Time, ev.Status = at+int64(i)*1e8, 200
		if i < failing {
			ev.Status = 503
		}
		t.Learn(&ev, nil)
	}
	ev.SetDevice([]byte("acme"), []byte("c-outsider"))
	return ev.ClassKey, ev.DeviceKey
}

// TestClassFailing: a class is failing when many of its devices were
// answered with a 5xx in the last minute or two, not when one or a few of a
// large class were, and no longer a few minutes after.
func TestClassFailing(t *testing.T) {
	const at = int64(1736121600e9) // a minute boundary
	for _, c := range []struct {
		devices, failing int
		want             bool
	}{
		{200, 0, false},
		{200, 1, false},  // one device failing alone
		{200, 8, false},  // a few of a large class
		{200, 60, true},  // a backend incident
		{10, 8, true},    // most of a small class
		{10, 3, false},   // too few devices
		{10, 4, true},    // just enough
		{400, 300, true}, // the sketch does not saturate
	} {
		tab := newStats()
		class, device := learnMinute(tab, c.devices, c.failing, at)
		got, others, seen := tab.ClassFailing(class, device, at+30e9)
		if got != c.want {
			t.Errorf("%d of %d devices failing: ClassFailing %v (others %.1f, seen %.1f), want %v",
				c.failing, c.devices, got, others, seen, c.want)
		}
		if fast := tab.classFailing(class, device, at+30e9); fast != got {
			t.Errorf("%d of %d devices failing: classFailing %v, ClassFailing %v", c.failing, c.devices, fast, got)
		}
	}

	tab := newStats()
	class, device := learnMinute(tab, 200, 60, at)
	if f, _, _ := tab.ClassFailing(class, device, at+90e9); !f {
		t.Errorf("the minute after the failures: not failing, want failing")
	}
	if f, _, _ := tab.ClassFailing(class, device, at+150e9); f {
		t.Errorf("two minutes after the failures: failing, want not (the sketches cover one to two minutes)")
	}
	if f, _, _ := tab.ClassFailing(class^1, device, at+30e9); f {
		t.Errorf("an unknown class is failing")
	}
	// A new minute of the class, all served, clears the half of two
	// minutes ago: the class does not keep failing.
	learnMinute(tab, 200, 0, at+120e9)
	if f, others, _ := tab.ClassFailing(class, device, at+130e9); f || others != 0 {
		t.Errorf("a served minute two minutes after the failures: failing %v with %.1f others, want not failing, 0", f, others)
	}
	// The device's own failures are not the class's.
	tab = newStats()
	learnMinute(tab, 200, 1, at)
	var ev schemas.Event
	ev.SetClass([]byte("camera/z"))
	ev.SetDevice([]byte("acme"), []byte("c-0"))
	if _, others, _ := tab.ClassFailing(class, ev.DeviceKey, at+30e9); others != 0 {
		t.Errorf("one device failing alone: %.1f other devices failing, want 0", others)
	}
	if a := testing.AllocsPerRun(100, func() { tab.ClassFailing(class, device, at+30e9) }); a != 0 {
		t.Errorf("ClassFailing allocates %v times; want 0", a)
	}
}

// TestFleetFailing: a backend incident fails the whole fleet at once; a
// class with too few active devices to show it on its own (two locks) is
// failing when the fleet's sampled devices are, and not when only the small
// class fails.
func TestFleetFailing(t *testing.T) {
	const at = int64(1736121600e9)
	for _, c := range []struct {
		fleetFailing int
		want         bool
	}{
		{0, false},  // the two locks fail alone
		{20, false}, // a few of the fleet's 800 devices: the background
		{600, true}, // a backend incident
	} {
		tab := newStats()
		learnMinute(tab, 800, c.fleetFailing, at)
		var ev schemas.Event
		ev.SetClass([]byte("lock/q"))
		ev.SetCommand([]byte("POST /v1/devices/{id}/state"))
		for i := range 2 {
			ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "l-%d", i))
			ev.Time, ev.Status = at+int64(i)*1e8, 503
			tab.Learn(&ev, nil)
		}
		ev.SetDevice([]byte("acme"), []byte("l-outsider"))
		got, _, _ := tab.ClassFailing(ev.ClassKey, ev.DeviceKey, at+30e9)
		if got != c.want {
			t.Errorf("%d of the fleet's 800 devices and 2 locks failing: the locks' class failing %v, want %v", c.fleetFailing, got, c.want)
		}
		if fast := tab.classFailing(ev.ClassKey, ev.DeviceKey, at+30e9); fast != got {
			t.Errorf("%d failing: classFailing %v, ClassFailing %v", c.fleetFailing, fast, got)
		}
	}
}
