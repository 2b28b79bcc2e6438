package upload

import (
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device (and, with a fleet, three peers of its class)
// at one 300-byte request a minute for three hours, then measures Observe on
// events step ns apart with the given bytes in.
func benchObserve(b *testing.B, withFleet bool, step int64, bytesIn uint64) {
	var d Detector
	ev, state, view, t := warmDevice(withFleet)
	ev.BytesIn = bytesIn
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		t += step
		ev.Time = t
		d.Observe(ev, state, view)
	}
	cpu.Report(b)
}

// warmDevice returns the event, record and fleet view (nil without a fleet)
// of benchObserve's warm device, and the time of its last event.
func warmDevice(withFleet bool) (*schemas.Event, []byte, detectors.Fleet, int64) {
	ev := new(schemas.Event)
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
			d.Observe(ev, state, view)
			if stats != nil {
				stats.Learn(ev, before[:])
			}
		}
	}
	return ev, state, view, int64(1736121600e9 + 180*60e9)
}

// benchGrowth measures the warm device's bucket closes (one request per
// bucket) while its request size grows by 40% a bucket from 300 bytes; every
// 16 buckets the device is restored to its warm record, so that half of the
// ops close a bucket with a bytes_in_growth finding (checked).
func benchGrowth(b *testing.B) {
	var d Detector
	ev, state, view, t := warmDevice(true)
	warm := append([]byte(nil), state...)
	var sizes [16]uint64
	for i := range sizes {
		sizes[i] = uint64(300 * math.Pow(1.4, float64(i+1)))
	}
	b.ReportAllocs()
	i, growth := 0, 0
	cpu := threadcpu.Start()
	for b.Loop() {
		k := i % len(sizes)
		if k == 0 {
			copy(state, warm)
		}
		t += BucketNs
		ev.Time, ev.BytesIn = t, sizes[k]
		if d.Observe(ev, state, view).Reason == ReasonBytesInGrowth {
			growth++
		}
		i++
	}
	cpu.Report(b)
	b.ReportMetric(float64(growth)/float64(i), "growth/op")
	if i >= 2*len(sizes) && growth < i/4 {
		b.Fatalf("%d bytes_in_growth findings in %d ops; want at least a quarter", growth, i)
	}
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, false, 60e9, 300) })
	b.Run("steady_fleet", func(b *testing.B) { benchObserve(b, true, 60e9, 300) })
	b.Run("burst_fleet", func(b *testing.B) { benchObserve(b, true, 25e9, 600_000) })
	b.Run("bucket_close_fleet", func(b *testing.B) { benchObserve(b, true, 300e9, 300) })
	b.Run("growth_fleet", benchGrowth)
}
