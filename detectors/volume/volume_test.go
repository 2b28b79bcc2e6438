package volume

import (
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// rater is a fleet view that knows its classes' typical request rate.
type rater struct {
	*detectors.ClassTable
	rate float64
}

func (r rater) ClassRate(uint64) float64 { return r.rate }

// TestClassPrior: a brand-new device flooding from its first events is caught
// when the fleet view knows its class's rate (one request a minute), scored
// below blocking since it has not graduated; without that knowledge, or with
// traffic at the class's rate, nothing fires before warm-up.
func TestClassPrior(t *testing.T) {
	flood := func(fleet detectors.Fleet, every int64) (n int, top float32) {
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte("new-1"))
		ev.SetClass([]byte("meter/x"))
		state := make([]byte, StateSize)
		var d Detector
		tm := int64(1736121600e9)
		for range 60 {
			tm += every
			ev.Time = tm
			if f := d.Observe(&ev, state, fleet); f.Reason != schemas.ReasonNone {
				if f.Reason != ReasonRateSpike {
					t.Fatalf("cold device: reason %q, want %q", f.Reason, ReasonRateSpike)
				}
				n, top = n+1, max(top, f.Score)
			}
		}
		return n, top
	}
	table := detectors.NewClassTable(1024, 1024)
	if n, top := flood(rater{table, 1.0 / 60}, 1e9); n == 0 || top > ColdMaxScore {
		t.Errorf("flood at 1/s on a class of 1/min: %d findings, top score %v; want some, at most %v", n, top, ColdMaxScore)
	}
	if n, _ := flood(rater{table, 1.0 / 60}, 60e9); n != 0 {
		t.Errorf("traffic at the class's rate: %d findings; want none", n)
	}
	if n, _ := flood(table, 1e9); n != 0 {
		t.Errorf("flood without a class rate: %d findings; want none before warm-up", n)
	}
}

// TestNewDeviceAgainstClass: with the class table's learned rate (50 meters
// at one request a minute), a brand-new meter sending 30 times that rate
// alerts (score 0.6 or more) but is not blocked (at most ColdMaxScore) before
// its own warm-up would let it be judged; a new meter at the class's pace
// gives nothing. Events reach the table after Observe, as in the worker.
func TestNewDeviceAgainstClass(t *testing.T) {
	table := newStats()
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	tm := int64(1736121600e9)
	for i := range 50 {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "m-%d", i))
		for k := range 60 {
			ev.Time = tm + int64(k)*60e9 + int64(i)*1e9
			table.Learn(&ev, nil)
		}
	}
	if r := table.ClassRate(ev.ClassKey); !(r > 0) {
		t.Fatalf("class rate %v after an hour of 50 meters; want > 0", r)
	}
	newDevice := func(name string, every int64) (alertAt int, top float32) {
		ev.SetDevice([]byte("acme"), []byte(name))
		state := make([]byte, StateSize)
		var d Detector
		at := tm + 3600e9
		for i := range WarmEvents {
			at += every
			ev.Time = at
			f := d.Observe(&ev, state, table)
			table.Learn(&ev, nil)
			if f.Reason != schemas.ReasonNone && f.Reason != ReasonRateSpike {
				t.Fatalf("%s, event %d: reason %q; want %q or none", name, i, f.Reason, ReasonRateSpike)
			}
			if f.Score >= 0.6 && alertAt == 0 {
				alertAt = i + 1
			}
			top = max(top, f.Score)
		}
		return alertAt, top
	}
	if at, top := newDevice("new-flood", 2e9); at == 0 || top > ColdMaxScore {
		t.Errorf("new meter at 30x its class's rate: first alerting event %d (0: none) of %d, top score %v; want an alert, at most %v",
			at, WarmEvents, top, ColdMaxScore)
	}
	if _, top := newDevice("new-normal", 60e9); top != 0 {
		t.Errorf("new meter at its class's rate: top score %v; want no finding", top)
	}
}

// steadyDevice returns a device record warmed with n responses, one every
// step ns, of size(i) bytes each, and the time of the last.
func steadyDevice(t *testing.T, n int, step int64, size func(i int) uint64) (*schemas.Event, []byte, int64) {
	t.Helper()
	ev := new(schemas.Event)
	ev.SetDevice([]byte("acme"), []byte("t-1"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/telemetry"))
	ev.Status, ev.Auth = 200, schemas.AuthOK
	state := make([]byte, StateSize)
	var d Detector
	tm := int64(1736121600e9)
	for i := range n {
		tm += step
		ev.Time, ev.BytesOut = tm, size(i)
		if f := d.Observe(ev, state, nil); f.Reason != schemas.ReasonNone {
			t.Fatalf("warm-up event %d (%d bytes): %+v; want no finding", i, ev.BytesOut, f)
		}
	}
	return ev, state, tm
}

// TestHeavyTailedResponses: a thermostat's 32-64 byte acks with a 1.4 KB
// config now and then and one 1.2 MB firmware download produce no finding;
// 200 KB reads with its key, three a minute (too few for a rate spike), do
// (bytes_out_spike), and the responses after them do not inherit it.
func TestHeavyTailedResponses(t *testing.T) {
	size := func(i int) uint64 {
		switch {
		case i == 900:
			return 1_200_000
		case i%67 == 0:
			return 1400
		}
		return uint64(32 + i*7%33)
	}
	ev, state, tm := steadyDevice(t, 1440, 60e9, size) // a day at one a minute
	var d Detector
	spikes := 0
	for i := range 20 {
		tm += 20e9
		ev.Time, ev.BytesOut = tm, 200_000
		f := d.Observe(ev, state, nil)
		if f.Reason == ReasonBytesOutSpike {
			spikes++
		} else if f.Reason != schemas.ReasonNone {
			t.Fatalf("read %d: %+v; want %q or none", i, f, ReasonBytesOutSpike)
		}
	}
	if spikes == 0 {
		t.Errorf("20 reads of 200 KB on a device of 50-byte acks: no bytes_out_spike")
	}
	for i := range 5 {
		tm += 60e9
		ev.Time, ev.BytesOut = tm, 48
		if f := d.Observe(ev, state, nil); f.Reason == ReasonBytesOutSpike {
			t.Errorf("normal ack %d after the reads: %+v; want no bytes_out_spike", i, f)
		}
	}
}

// TestNoReasonBand: a warm device without a finding reports its short
// request window and the baseline's expectation, with no reason and score,
// without allocating.
func TestNoReasonBand(t *testing.T) {
	ev, state, tm := steadyDevice(t, 120, 60e9, func(int) uint64 { return 48 })
	var d Detector
	tm += 60e9
	ev.Time = tm
	f := d.Observe(ev, state, nil)
	if f.Reason != schemas.ReasonNone || f.Score != 0 || !(f.Observed >= 1) || !(f.Expected > 0 && f.Expected < f.Observed*2) {
		t.Errorf("steady device: %+v; want no reason, score 0, observed >= 1, expected near the window's count", f)
	}
	if a := testing.AllocsPerRun(100, func() {
		tm += 60e9
		ev.Time = tm
		d.Observe(ev, state, nil)
	}); a != 0 {
		t.Errorf("Observe allocates %v times per event; want 0", a)
	}
}

// TestSilenceNeverAlerts: a silence of any length scores below the default
// alert threshold (0.6) and grows with the gap.
func TestSilenceNeverAlerts(t *testing.T) {
	prev := float32(0)
	for _, gap := range []float64{MinSilence, 2 * 3600, 8 * 3600, 30 * 86400} {
		s := silenceScore(gap)
		if !(s > 0 && s < 0.6 && s >= prev) {
			t.Errorf("silenceScore(%v) = %v (previous %v); want in (0, 0.6), non-decreasing", gap, s, prev)
		}
		prev = s
	}
}

// TestRunBeforeWarmUp: a device parked (one request every 5 minutes) that
// starts its first trip (one request every 6 s, too slow to fill the short
// window, a run of 50 times its rate) before its warm-up ends is not flagged
// for that run, which its young baseline was built on; the same trip started
// by the same device once warm (and no longer in its first session) is a
// rate spike. With no fleet view, neither the device nor its class knows any
// session.
func TestRunBeforeWarmUp(t *testing.T) {
	trip := func(parked int) int { return tripSpikes("rov-1", parked, 60, 6e9) }
	if n := trip(10); n != 0 {
		t.Errorf("trip started at event 11 (warm-up is %d events): %d rate spikes; want none", WarmEvents, n)
	}
	if n := trip(WarmEvents + 5); n == 0 {
		t.Errorf("trip started at event %d, once warm: no rate spike; want the run flagged", WarmEvents+6)
	}
}

// TestLongTripBeforeWarmUp: a parked device (one request every 5 minutes)
// whose first trip (one every 10 s for 12 minutes) began
// before its warm-up is not flagged for it, however long the trip lasts:
// its run keeps only its last TauMedium seconds of expectation, so the run
// seems to begin after the warm-up while the trip, begun before it, goes
// on (the open episode tells). The same trip begun once the device is warm
// is flagged. No fleet view: neither the device nor its class knows any
// session.
func TestLongTripBeforeWarmUp(t *testing.T) {
	trip := func(parked int) int { return tripSpikes("rov-2", parked, 75, 10e9) }
	if n := trip(10); n != 0 {
		t.Errorf("12-minute trip started at event 11 (warm-up is %d events): %d rate spikes; want none", WarmEvents, n)
	}
	if n := trip(WarmEvents + 5); n == 0 {
		t.Errorf("the same trip started at event %d, once warm: no rate spike; want it flagged", WarmEvents+6)
	}
}

// tripSpikes counts the rate spikes a vehicle gets (no fleet view) when it
// reports every 5 minutes for parked requests, then makes a trip of
// requests one every step nanoseconds.
func tripSpikes(id string, parked, trip int, step int64) (spikes int) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(id))
	ev.SetCommand([]byte("POST /v1/vehicles/{id}/position"))
	ev.Status, ev.Auth = 200, schemas.AuthOK
	state := make([]byte, StateSize)
	var d Detector
	tm := int64(1736121600e9)
	for i := range parked + trip {
		if i < parked {
			tm += 300e9
		} else {
			tm += step
		}
		ev.Time = tm
		if f := d.Observe(&ev, state, nil); f.Reason == ReasonRateSpike && f.Score > 0 {
			spikes++
		}
	}
	return spikes
}

// burster is a fleet view that knows its classes' typical burstiness.
type burster struct {
	*detectors.ClassTable
	short, run, length float64
}

func (b burster) ClassBurst(uint64) (short, run, length float64) { return b.short, b.run, b.length }

// parkedThenRun feeds a vehicle parked at one request every 5 minutes for
// 150 requests (no finding allowed), then count requests gap apart, and
// returns how many of those were rate spikes. own > 0 gives the device a
// memory of one trip of its own at own times its baseline, 30 events long,
// before the run.
func parkedThenRun(t *testing.T, device string, fleet detectors.Fleet, own float64, gap int64, count int) (spikes int) {
	t.Helper()
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(device))
	ev.SetClass([]byte("vehicle/x"))
	ev.SetCommand([]byte("POST /v1/vehicles/{id}/track"))
	ev.Status, ev.Auth = 200, schemas.AuthOK
	rec := make([]byte, StateSize)
	var d Detector
	tm := int64(1736121600e9)
	for i := range 150 + count {
		step := int64(300e9)
		if i >= 150 {
			step = gap
		}
		if i == 150 && own > 0 {
			var s state
			s.load(rec)
			s.burstRun, s.burstLen = own, 30
			s.store(rec)
		}
		tm += step
		ev.Time = tm
		f := d.Observe(&ev, rec, fleet)
		if i < 150 && f.Reason != schemas.ReasonNone {
			t.Fatalf("parked request %d: finding %q; want none", i, f.Reason)
		}
		if f.Reason == ReasonRateSpike && f.Score > 0 {
			spikes++
		}
	}
	return spikes
}

// TestFirstSessionAgainstClass: a graduated device parked at one request
// every 5 minutes, which remembers no session of its own, starts its first
// trip (a request every 7 s for 12 requests: 40 times its rate, too slow to
// fill the short window). Its class's vehicles remember trips at 20 times
// their baselines: the run's ratio is twice that, but 12 requests where a
// class session sends 6 are no evidence against a session, and it is not
// flagged. Without the class's memory it is a rate spike; a run at one
// request every 3 s for 40 requests (three times the class's sessions,
// judged on 40 requests) is one even with it.
func TestFirstSessionAgainstClass(t *testing.T) {
	run := func(fleet detectors.Fleet, gap int64, count int) int {
		return parkedThenRun(t, "rov-3", fleet, 0, gap, count)
	}
	table := detectors.NewClassTable(1024, 1024)
	trips := burster{table, 0, 20, 40}
	if n := run(trips, 7e9, 12); n != 0 {
		t.Errorf("first trip, 2x the class's remembered sessions over 12 requests: %d rate spikes; want none", n)
	}
	if n := run(table, 7e9, 12); n == 0 {
		t.Errorf("the same trip, the class remembering no session: no rate spike; want it flagged")
	}
	if n := run(trips, 3e9, 40); n == 0 {
		t.Errorf("a run at 3x the class's remembered sessions over 40 requests: no rate spike; want it flagged")
	}
}

// TestYoungMemoryAgainstClass: a graduated vehicle parked at one request
// every 5 minutes remembers one trip of its own at 10 times its baseline
// (a memory measured against a baseline that had learned part of the
// trip), while its class's vehicles remember trips at 20 times theirs. The
// next trip's start, a request every 7 s for 12 requests (40 times the
// parked rate), is 2.7 times the device's memory by its ratio, but 12
// requests where a class session sends about 5 are no evidence against a
// session: not flagged (field seed 1's rov-000106; flagged before f2). A
// device whose own memory's margin covers the class's sessions (14 times,
// margin 21, class 16) is judged by its own margin as before and the same
// trip is flagged; so is a flood at a trip's start (a request a second for
// 40 requests) with the young memory and the class's.
func TestYoungMemoryAgainstClass(t *testing.T) {
	run := func(fleet detectors.Fleet, own float64, gap int64, count int) int {
		return parkedThenRun(t, "rov-4", fleet, own, gap, count)
	}
	table := detectors.NewClassTable(1024, 1024)
	if n := run(burster{table, 0, 20, 40}, 10, 7e9, 12); n != 0 {
		t.Errorf("a trip's start at 4x a young memory of 10x, class at 20x: %d rate spikes; want none", n)
	}
	if n := run(burster{table, 0, 16, 40}, 14, 7e9, 12); n == 0 {
		t.Errorf("the same trip, own memory 14x covering the class's 16x: no rate spike; want it flagged")
	}
	if n := run(burster{table, 0, 20, 40}, 10, 1e9, 40); n == 0 {
		t.Errorf("a flood at a trip's start (a request a second), young memory 10x, class 20x: no rate spike; want it flagged")
	}
}

// TestLongFirstTripAgainstClass: a graduated vehicle parked at one request
// every 5 minutes, which remembers no session of its own, makes its first
// trip: a request every 10 s for 80 requests (30 times its rate, 13 minutes).
// Its class's vehicles remember trips at 20 times their baselines, but
// episodes of only 5 events (the median of episodes still open, or cut
// short once a baseline learned its trip): the trip outlasts three such
// lengths after 15 events. Judged as a count against a class session for
// as long as it lasts, it is not flagged (field seed 2's first trips; a
// rate spike at 16 times the baseline for the rest of the trip before).
// A flood of the same length (a request a second) is improbable as a class
// session and flagged, as is the same trip with no class memory at all.
func TestLongFirstTripAgainstClass(t *testing.T) {
	run := func(fleet detectors.Fleet, gap int64, count int) int {
		return parkedThenRun(t, "rov-5", fleet, 0, gap, count)
	}
	table := detectors.NewClassTable(1024, 1024)
	short := burster{table, 0, 20, 5}
	if n := run(short, 10e9, 80); n != 0 {
		t.Errorf("a long first trip at 1.5x the class's sessions, class episodes of 5 events: %d rate spikes; want none", n)
	}
	if n := run(short, 1e9, 80); n == 0 {
		t.Errorf("a flood of 80 requests a second apart, class episodes of 5 events: no rate spike; want it flagged")
	}
	if n := run(table, 10e9, 80); n == 0 {
		t.Errorf("the same trip, the class remembering no session: no rate spike; want it flagged")
	}
}
