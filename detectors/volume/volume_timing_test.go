package volume

import (
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device at one request a minute, then measures Observe
// on events step ns apart with the given status and auth outcome.
func benchObserve(b *testing.B, step int64, status uint16, auth schemas.AuthOutcome) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Status, ev.Auth = 200, schemas.AuthOK
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 200 {
		t += 60e9
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
	ev.Status, ev.Auth = status, auth
	b.ReportAllocs()
	for b.Loop() {
		t += step
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, 60e9, 200, schemas.AuthOK) })
	b.Run("flood", func(b *testing.B) { benchObserve(b, 1e8, 200, schemas.AuthOK) })
	b.Run("auth_failures", func(b *testing.B) { benchObserve(b, 1e8, 401, schemas.AuthFailed) })
}
