package geo

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device up in four countries, with a class of 30
// devices in the fleet view, then scores events changed by attack.
func benchObserve(b *testing.B, attack func(ev *schemas.Event)) {
	fleet := NewStats(detectors.NewClassTable(1<<12, 1<<10))
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	ev.ASN = 3320
	t := int64(1736121600e9)
	for i := range 30 {
		ev.SetDevice([]byte("acme"), []byte{'p', byte('0' + i/10), byte('0' + i%10)})
		ev.Time, ev.Country = t, schemas.Country{'D', 'E'}
		fleet.learn(&ev)
	}
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	state := make([]byte, StateSize)
	var d Detector
	for _, c := range []string{"AT", "CH", "PL", "DE"} {
		ev.Country = schemas.Country{c[0], c[1]}
		for range 100 {
			t += 60e9
			ev.Time = t
			d.Observe(&ev, state, fleet)
			fleet.learn(&ev)
		}
	}
	attack(&ev)
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		t += 1e9
		ev.Time = t
		d.Observe(&ev, state, fleet)
	}
	cpu.Report(b)
}

func BenchmarkObserve(b *testing.B) {
	b.Run("steady", func(b *testing.B) { benchObserve(b, func(*schemas.Event) {}) })
	b.Run("new_country", func(b *testing.B) {
		benchObserve(b, func(ev *schemas.Event) { ev.Country = schemas.Country{'F', 'R'} })
	})
	b.Run("asn_change", func(b *testing.B) { benchObserve(b, func(ev *schemas.Event) { ev.ASN = 64500 }) })
	// Coordinates from the log or a city database instead of the centroid.
	b.Run("coordinates", func(b *testing.B) {
		benchObserve(b, func(ev *schemas.Event) { ev.Lat, ev.Lon = 52.52, 13.40 })
	})
}

// BenchmarkObserveYoung measures a young device's first request from a
// country no device of its class uses (FR, where the class's 30 devices use
// DE): every op is a fresh record's rare_fleet_country finding (checked).
func BenchmarkObserveYoung(b *testing.B) {
	fleet := NewStats(detectors.NewClassTable(1<<12, 1<<10))
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	ev.ASN = 3320
	t := int64(1736121600e9)
	for i := range 30 {
		ev.SetDevice([]byte("acme"), []byte{'p', byte('0' + i/10), byte('0' + i%10)})
		ev.Time, ev.Country = t, schemas.Country{'D', 'E'}
		fleet.learn(&ev)
	}
	t += 86400e9 // the class is established
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.Country = schemas.Country{'F', 'R'}
	state := make([]byte, StateSize)
	var d Detector
	b.ReportAllocs()
	rare := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		clear(state)
		t += 1e9
		ev.Time = t
		if d.Observe(&ev, state, fleet).Reason == ReasonRareFleetCountry {
			rare++
		}
	}
	cpu.Report(b)
	if rare != b.N {
		b.Fatalf("%d rare_fleet_country findings in %d ops; want every op", rare, b.N)
	}
}

// BenchmarkObserveTravel alternates Berlin and Tokyo coordinates: every event
// is an impossible_travel finding (the slowest path: distance, arcsine).
func BenchmarkObserveTravel(b *testing.B) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.Country = schemas.Country{'D', 'E'}
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		t += 1e9
		ev.Time = t
		if i++; i%2 == 0 {
			ev.Country, ev.Lat, ev.Lon = schemas.Country{'J', 'P'}, 35.68, 139.69
		} else {
			ev.Country, ev.Lat, ev.Lon = schemas.Country{'D', 'E'}, 52.52, 13.40
		}
		d.Observe(&ev, state, nil)
	}
	cpu.Report(b)
}
