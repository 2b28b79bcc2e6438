package geo

import (
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

func benchObserve(b *testing.B, country string) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.Country = schemas.Country{'D', 'E'}
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for _, c := range []string{"AT", "CH", "PL", "DE"} {
		ev.Country = schemas.Country{c[0], c[1]}
		for range 100 {
			t += 60e9
			ev.Time = t
			d.Observe(&ev, state, nil)
		}
	}
	ev.Country = schemas.Country{country[0], country[1]}
	b.ReportAllocs()
	for b.Loop() {
		t += 1e9
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, "DE") })
	b.Run("new_country", func(b *testing.B) { benchObserve(b, "FR") })
}
