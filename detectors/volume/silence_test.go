package volume

import (
	"math"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

var _ detectors.Sweeper = Detector{}

// regularDevice returns the state of a device that sent count requests every
// `every`, starting at t0, and the time of its last request.
func regularDevice(t *testing.T, every time.Duration, count int) (rec []byte, last int64) {
	t.Helper()
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("meter-1"))
	ev.SetClass([]byte("meter/m1"))
	ev.Auth, ev.Status, ev.BytesOut = schemas.AuthOK, 200, 120
	rec = make([]byte, StateSize)
	fleet := detectors.NewClassTable(1024, 1024)
	var d Detector
	t0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range count {
		ev.Time = t0 + int64(i)*int64(every)
		if f := d.Observe(&ev, rec, fleet); f.Reason != schemas.ReasonNone {
			t.Fatalf("regular traffic every %v: event %d has finding %+v", every, i, f)
		}
	}
	return rec, ev.Time
}

// observeAt returns the finding Observe gives an event at tm on a copy of rec.
func observeAt(rec []byte, tm int64) schemas.Finding {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("meter-1"))
	ev.SetClass([]byte("meter/m1"))
	ev.Auth, ev.Status, ev.BytesOut, ev.Time = schemas.AuthOK, 200, 120, tm
	return (&Detector{}).Observe(&ev, append([]byte(nil), rec...), detectors.NewClassTable(1024, 1024))
}

// TestSilentAtAgreesWithObserve: the sweep's silence time is the first time
// at which a returning event is a silence, and the sweep's finding at any time
// from then on is the finding Observe gives the device coming back then.
func TestSilentAtAgreesWithObserve(t *testing.T) {
	f := func(every time.Duration, count int) {
		t.Helper()
		rec, last := regularDevice(t, every, count)
		at, ok := Detector{}.SilentAt(rec)
		if !ok {
			t.Fatalf("every %v: a warm device has no silence time", every)
		}
		var s state
		s.load(rec)
		want := max(MinSilence, MinSurprise*math.Ln10*s.meanGap())
		if gap := float64(at-last) / 1e9; math.Abs(gap-want) > 1e-6 {
			t.Errorf("every %v: silent after %.3f s, want %.3f s (mean gap %.1f s)", every, gap, want, s.meanGap())
		}
		if f := observeAt(rec, at-1); f.Reason == ReasonSilence {
			t.Errorf("every %v: a return 1 ns before the silence time is already a silence", every)
		}
		if f := (Detector{}).Silence(rec, at-1); f.Reason != schemas.ReasonNone {
			t.Errorf("every %v: the sweep reports %+v 1 ns before the silence time", every, f)
		}
		for _, tm := range []int64{at, at + int64(time.Minute), at + int64(7*time.Hour)} {
			sweep, back := Detector{}.Silence(rec, tm), observeAt(rec, tm)
			if sweep.Reason != ReasonSilence || sweep != back {
				t.Errorf("every %v, %v after the threshold: sweep finding %+v, returning device's %+v",
					every, time.Duration(tm-at), sweep, back)
			}
			if sweep.Score < SilenceMinScore || sweep.Score > SilenceMaxScore || sweep.Observed != float64(tm-last)/1e9 {
				t.Errorf("every %v: finding %+v: score out of range or gap not the time since the last event", every, sweep)
			}
		}
		before := string(rec)
		Detector{}.SilentAt(rec)
		Detector{}.Silence(rec, at)
		if string(rec) != before {
			t.Errorf("every %v: the sweep changed the record", every)
		}
	}
	f(time.Minute, 120)     // threshold MinSilence (30 min)
	f(10*time.Minute, 40)   // threshold from the surprise (about 2.3 h)
	f(37*time.Second, 1000) // a busier device, threshold MinSilence
	f(20*time.Minute, 30)   // surprise threshold about 4.6 h
}

// TestSilentAtNeedsAWarmDevice: no history, too few events or too little
// exposure means no silence, as Observe.
func TestSilentAtNeedsAWarmDevice(t *testing.T) {
	if _, ok := (Detector{}).SilentAt(make([]byte, StateSize)); ok {
		t.Error("an empty record has a silence time")
	}
	if _, ok := (Detector{}).SilentAt(make([]byte, StateSize-1)); ok {
		t.Error("a short record has a silence time")
	}
	for _, c := range []struct {
		every time.Duration
		count int
	}{{time.Minute, WarmEvents - 1}, {time.Second, 5 * WarmEvents}} {
		rec, last := regularDevice(t, c.every, c.count)
		if at, ok := (Detector{}).SilentAt(rec); ok {
			t.Errorf("%d events every %v (not warm): silent at %v", c.count, c.every, time.Duration(at-last))
		}
		if f := (Detector{}).Silence(rec, last+int64(48*time.Hour)); f.Reason != schemas.ReasonNone {
			t.Errorf("%d events every %v (not warm): sweep finding %+v", c.count, c.every, f)
		}
		if f := observeAt(rec, last+int64(48*time.Hour)); f.Reason == ReasonSilence {
			t.Errorf("%d events every %v (not warm): Observe reports a silence the sweep does not", c.count, c.every)
		}
	}
}

// TestSweepDoesNotAllocate: the sweep runs over every record of a worker.
func TestSweepDoesNotAllocate(t *testing.T) {
	rec, last := regularDevice(t, time.Minute, 120)
	var d detectors.Sweeper = Detector{}
	if n := testing.AllocsPerRun(100, func() {
		at, _ := d.SilentAt(rec)
		_ = d.Silence(rec, max(at, last))
	}); n != 0 {
		t.Errorf("SilentAt and Silence allocate %v times", n)
	}
}
