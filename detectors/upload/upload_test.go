package upload

import (
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// feed observes n events of dev, gap ns apart from *t, with bytesIn, and
// teaches them to stats when it is not nil; it returns the last finding.
func feed(state []byte, stats *Stats, dev string, t *int64, n int, gap int64, bytesIn uint64) schemas.Finding {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(dev))
	ev.SetClass([]byte("meter/m"))
	ev.BytesIn = bytesIn
	var view detectors.Fleet
	if stats != nil {
		view = stats
	}
	var f schemas.Finding
	for range n {
		*t += gap
		ev.Time = *t
		before := [StateSize]byte(state)
		f = (&Detector{}).Observe(&ev, state, view)
		if stats != nil {
			stats.Learn(&ev, before[:])
		}
	}
	return f
}

// TestRearmClearsTheWindow: after a block, the upload that caused it is no
// longer in the window, and the device's band and typical size are kept.
func TestRearmClearsTheWindow(t *testing.T) {
	rec := make([]byte, StateSize)
	tm := int64(1736121600e9)
	feed(rec, nil, "d-1", &tm, 120, 60e9, 500)
	if f := feed(rec, nil, "d-1", &tm, 3, 20e9, 500_000); f.Reason != ReasonBytesInBurst {
		t.Fatalf("upload of 500 KB a request gave %+v; want %s", f, ReasonBytesInBurst)
	}
	var before state
	before.load(rec)
	Detector{}.Rearm(rec)
	var after state
	after.load(rec)
	if after.win != 0 || after.cusum != 0 {
		t.Errorf("after Rearm: window %v, CUSUM %v; want 0, 0", after.win, after.cusum)
	}
	if after.peak != before.peak || after.mid != before.mid || after.mean != before.mean || after.n != before.n {
		t.Errorf("Rearm changed the baseline: %+v, was %+v", after, before)
	}
	zero := make([]byte, StateSize)
	Detector{}.Rearm(zero)
	for _, c := range zero {
		if c != 0 {
			t.Fatalf("Rearm of no history wrote %v", zero)
		}
	}
}

// TestClassBandsNeedThreeWarmDevices: the class prior is the upper quartile
// of warm sampled devices' bands, unknown with fewer than three samples.
func TestClassBandsNeedThreeWarmDevices(t *testing.T) {
	stats := NewStats(detectors.NewClassTable(1024, 1024))
	var ev schemas.Event // for the class key: feed's tenant and class
	ev.SetDevice([]byte("acme"), []byte("m-1"))
	ev.SetClass([]byte("meter/m"))
	// Devices share a class's 16 sample slots by their keys' top bits (two
	// may share one): eight devices make at least three samples here.
	for i, dev := range []string{"m-1", "m-2", "m-3", "m-4", "m-5", "m-6", "m-7", "m-8"} {
		if w, _ := stats.ClassBands(ev.ClassKey); i < SampleMinDevices && w != 0 {
			t.Fatalf("with %d warm devices the class band is %v; want 0 (unknown)", i, w)
		}
		state := make([]byte, StateSize)
		tm := int64(1736121600e9)
		feed(state, stats, dev, &tm, 12, 300e9, 520)
	}
	w, b := stats.ClassBands(ev.ClassKey)
	// A reading every 5 minutes: the window holds 520/(1-1/e) = 823 bytes
	// at each, a bucket's mean request is 520 bytes.
	if math.Abs(math.Expm1(w)-823) > 60 || math.Abs(math.Expm1(b)-520) > 60 {
		t.Errorf("class bands %.0f, %.0f bytes; want about 823, 520", math.Expm1(w), math.Expm1(b))
	}
	// A snapshot restores them into empty statistics of the same size.
	restored := NewStats(detectors.NewClassTable(1024, 1024))
	if err := restored.LoadSnapshot(stats.AppendSnapshot(nil)); err != nil {
		t.Fatal(err)
	}
	if w2, b2 := restored.ClassBands(ev.ClassKey); w2 != w || b2 != b {
		t.Errorf("restored class bands %v, %v; want %v, %v", w2, b2, w, b)
	}
	if err := restored.LoadSnapshot([]byte{1, 2, 3}); err == nil {
		t.Error("a truncated snapshot loaded without error")
	}
}
