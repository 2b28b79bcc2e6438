package volume

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
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
	for b.Loop() {
		t += step
		ev.Time = t
		d.Observe(&ev, state, view)
	}
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, nil, 60e9, 200, schemas.AuthOK, 2000) })
	b.Run("steady_cycle", func(b *testing.B) {
		benchObserve(b, newStats(), 60e9, 200, schemas.AuthOK, 2000)
	})
	b.Run("flood", func(b *testing.B) { benchObserve(b, nil, 1e8, 200, schemas.AuthOK, 2000) })
	b.Run("auth_failures", func(b *testing.B) { benchObserve(b, nil, 1e8, 401, schemas.AuthFailed, 2000) })
	b.Run("bytes_out", func(b *testing.B) { benchObserve(b, nil, 60e9, 200, schemas.AuthOK, 5e6) })
	b.Run("bucket_close", func(b *testing.B) { benchObserve(b, nil, 300e9, 200, schemas.AuthOK, 2000) })
}
