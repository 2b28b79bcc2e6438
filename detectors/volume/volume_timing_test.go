package volume

import (
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device at one request a minute, then measures Observe
// on events step ns apart with the given status, auth outcome and bytes out.
func benchObserve(b *testing.B, step int64, status uint16, auth schemas.AuthOutcome, bytes uint64) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
	ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 2000
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 200 {
		t += 60e9
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
	ev.Status, ev.Auth, ev.BytesOut = status, auth, bytes
	b.ReportAllocs()
	for b.Loop() {
		t += step
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, 60e9, 200, schemas.AuthOK, 2000) })
	b.Run("flood", func(b *testing.B) { benchObserve(b, 1e8, 200, schemas.AuthOK, 2000) })
	b.Run("auth_failures", func(b *testing.B) { benchObserve(b, 1e8, 401, schemas.AuthFailed, 2000) })
	b.Run("bytes_out", func(b *testing.B) { benchObserve(b, 60e9, 200, schemas.AuthOK, 5e6) })
	b.Run("bucket_close", func(b *testing.B) { benchObserve(b, 300e9, 200, schemas.AuthOK, 2000) })
}
