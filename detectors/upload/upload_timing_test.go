package upload

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device (and, with a fleet, three peers of its class)
// at one 300-byte request a minute for three hours, then measures Observe on
// events step ns apart with the given bytes in.
func benchObserve(b *testing.B, withFleet bool, step int64, bytesIn uint64) {
	var ev schemas.Event
	ev.SetClass([]byte("thermostat/t1"))
	ev.SetCommand([]byte("POST /v1/devices/{id}/telemetry"))
	ev.Status, ev.BytesIn = 201, 300
	state := make([]byte, StateSize)
	var d Detector
	var view detectors.Fleet
	var stats *Stats
	if withFleet {
		stats = NewStats(detectors.NewClassTable(1024, 1024))
		view = stats
	}
	for _, id := range []string{"peer-1", "peer-2", "peer-3", "d-1"} {
		ev.SetDevice([]byte("acme"), []byte(id))
		clear(state)
		t := int64(1736121600e9)
		for range 180 {
			t += 60e9
			ev.Time = t
			before := [StateSize]byte(state)
			d.Observe(&ev, state, view)
			if stats != nil {
				stats.Learn(&ev, before[:])
			}
		}
	}
	t := int64(1736121600e9 + 180*60e9)
	ev.BytesIn = bytesIn
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
	b.Run("steady", func(b *testing.B) { benchObserve(b, false, 60e9, 300) })
	b.Run("steady_fleet", func(b *testing.B) { benchObserve(b, true, 60e9, 300) })
	b.Run("burst_fleet", func(b *testing.B) { benchObserve(b, true, 25e9, 600_000) })
	b.Run("bucket_close_fleet", func(b *testing.B) { benchObserve(b, true, 300e9, 300) })
}
