package volume

import (
	"fmt"
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// learnRates teaches t devices of one class, each sending one request every
// gap(i) seconds for an hour, and returns the class key.
func learnRates(t *Stats, class string, devices int, gap func(i int) float64) uint64 {
	var ev schemas.Event
	ev.SetClass([]byte(class))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	const start = int64(1736121600e9)
	for i := range devices {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
		step := int64(gap(i) * 1e9)
		for tm := start + int64(i)*1e6; tm < start+3600e9; tm += step {
			ev.Time = tm
			t.Learn(&ev, nil)
		}
	}
	ev.SetDevice([]byte("acme"), []byte("d-0"))
	return ev.ClassKey
}

// TestClassRate: the class rate is a sampled device's typical rate, 0 for an
// unknown or too small class, and a few devices flooding at 50 times the rate
// do not drag it up.
func TestClassRate(t *testing.T) {
	tab := newStats()
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
	flooded := newStats()
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
