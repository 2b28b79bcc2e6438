package volume

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device at one request a minute, then measures Observe
// on events step ns apart with the given status, auth outcome and bytes out.
// With a fleet, the device's class has three days of history there (its
// daily cycle is known) and Observe reads its ramp.
func benchObserve(b *testing.B, fleet *Stats, step int64, status uint16, auth schemas.AuthOutcome, bytes uint64) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 2000
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	var view detectors.Fleet
	if fleet != nil {
		for range 3 * 1440 {
			t += 60e9
			ev.Time = t
			fleet.Learn(&ev, nil)
		}
		view = fleet
	}
	for range 200 {
		t += 60e9
		ev.Time = t
		d.Observe(&ev, state, view)
	}
	ev.Status, ev.Auth, ev.BytesOut = status, auth, bytes
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		t += step
		ev.Time = t
		d.Observe(&ev, state, view)
	}
	cpu.Report(b)
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, nil, 60e9, 200, schemas.AuthOK, 2000) })
	b.Run("steady_cycle", func(b *testing.B) {
		benchObserve(b, newStats(), 60e9, 200, schemas.AuthOK, 2000)
	})
	b.Run("flood", func(b *testing.B) { benchObserve(b, nil, 1e8, 200, schemas.AuthOK, 2000) })
	b.Run("flood_session_class", func(b *testing.B) {
		// A flood in a class whose 16 sampled devices remember sessions
		// (classburst.go): a flagged event reads the class's burstiness.
		fleet := newStats()
		learnBursts(fleet, "meter/x", 200, func(i int) []byte { return record(3, 5, 20, false) })
		benchObserve(b, fleet, 1e8, 200, schemas.AuthOK, 2000)
	})
	b.Run("first_session_class", benchFirstSession)
	b.Run("auth_failures", func(b *testing.B) { benchObserve(b, nil, 1e8, 401, schemas.AuthFailed, 2000) })
	b.Run("error_burst", func(b *testing.B) { benchObserve(b, newStats(), 1e9, 503, schemas.AuthOK, 2000) })
	b.Run("error_burst_incident", benchIncident)
	b.Run("bytes_out", func(b *testing.B) { benchObserve(b, nil, 60e9, 200, schemas.AuthOK, 5e6) })
	b.Run("bucket_close", func(b *testing.B) { benchObserve(b, nil, 300e9, 200, schemas.AuthOK, 2000) })
	b.Run("bucket_close_sizes", benchSizes)
	b.Run("drift", benchDrift)
}

// benchIncident measures a warm device's 503s a second apart while its class
// is failing (a backend incident): each op is the device's Observe (an
// error burst scored as fleet_errors after the class failure is read) and
// the Learn of one of 16 other devices' 503s at the same time, which keeps
// the class failing. The device's baseline learns a lasting error rate
// within hours: run it with -benchtime 1000x (the first 1000 s of an
// incident), where every op after the first few is a fleet_errors finding.
func benchIncident(b *testing.B) {
	fleet := newStats()
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 2000
	peers := make([]schemas.Event, 16)
	for i := range peers {
		peers[i] = ev
		peers[i].SetDevice([]byte("acme"), []byte{'p', byte('a' + i)})
		peers[i].Status = 503
	}
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 200 {
		t += 60e9
		ev.Time = t
		d.Observe(&ev, state, fleet)
		fleet.Learn(&ev, nil)
	}
	ev.Status = 503
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		t += 1e9
		ev.Time = t
		p := &peers[i&15]
		p.Time = t
		fleet.Learn(p, nil)
		if f := d.Observe(&ev, state, fleet); i > 10 && i < 1000 && f.Reason != ReasonFleetErrors {
			b.Fatalf("event %d of the incident: reason %q, want %q", i, f.Reason, ReasonFleetErrors)
		}
		i++
	}
	cpu.Report(b)
}

// benchFirstSession measures a parked device's first trip (a request every
// 7 s after one every 5 minutes, too slow for the short window: the run
// path) in a class whose devices remember trips at 20 times their baselines
// (classSessionRun): each op is one request of the trip; every 12 requests
// the device is parked again (its record restored), so every op is on a
// first session's run.
func benchFirstSession(b *testing.B) {
	var fleet detectors.Fleet = burster{detectors.NewClassTable(1024, 1024), 0, 20, 40}
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("rov-1"))
	ev.SetClass([]byte("vehicle/x"))
	ev.SetCommand([]byte("POST /v1/vehicles/{id}/track"))
	ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 90
	state, parked := make([]byte, StateSize), make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 150 {
		t += 300e9
		ev.Time = t
		d.Observe(&ev, state, fleet)
	}
	copy(parked, state)
	t0 := t
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		if i%12 == 0 {
			copy(state, parked)
			t = t0
		}
		t += 7e9
		ev.Time = t
		d.Observe(&ev, state, fleet)
		i++
	}
	cpu.Report(b)
}

// benchDrift measures bucket closes (one response per 5-minute bucket) of
// a device drifting as exfiltration.txt's does: warmed for two days at
// 2,000-byte responses, then at 2,200 until its first bytes_out_drift, then
// (the timed ops) at 2,420, restored to the record of that first finding
// every 12 buckets (an hour): every op a bytes_out_drift finding (checked).
func benchDrift(b *testing.B) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("cam-3"))
	ev.SetClass([]byte("camera/z"))
	ev.SetCommand([]byte("GET /v1/devices/{id}/settings"))
	ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 2000
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 2 * 288 {
		t += BucketNs
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
	ev.BytesOut = 2200
	for i := 0; ; i++ {
		if i == 48 {
			b.Fatal("no bytes_out_drift within 4 hours of 10% larger responses")
		}
		t += BucketNs
		ev.Time = t
		if d.Observe(&ev, state, nil).Reason == ReasonBytesOutDrift {
			break
		}
	}
	drifting, t0 := append([]byte(nil), state...), t
	ev.BytesOut = 2420
	b.ReportAllocs()
	i, drift := 0, 0
	cpu := threadcpu.Start()
	for b.Loop() {
		if i%12 == 0 {
			copy(state, drifting)
			t = t0
		}
		t += BucketNs
		ev.Time = t
		if d.Observe(&ev, state, nil).Reason == ReasonBytesOutDrift {
			drift++
		}
		i++
	}
	cpu.Report(b)
	if drift != i {
		b.Fatalf("%d bytes_out_drift findings in %d ops; want every op", drift, i)
	}
}

// benchSizes is bucket_close with responses of 2,000 and 2,100 bytes in
// turn: the closed bucket's mean size is never the closing response's (its
// logarithm is computed again).
func benchSizes(b *testing.B) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetClass([]byte("meter/x"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Status, ev.Auth = 200, schemas.AuthOK
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	sizes := [2]uint64{2000, 2100}
	for i := range 200 {
		t += 300e9
		ev.Time, ev.BytesOut = t, sizes[i%2]
		d.Observe(&ev, state, nil)
	}
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		t += 300e9
		ev.Time, ev.BytesOut = t, sizes[i%2]
		d.Observe(&ev, state, nil)
		i++
	}
	cpu.Report(b)
}
