package geo

import (
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// FuzzObserveGeo drives the fields the registry-wide FuzzObserve leaves at
// zero (ASN, coordinates) through any state record: no panic, finite values,
// a declared reason with a score in (0,1].
func FuzzObserveGeo(f *testing.F) {
	f.Add(int64(1736121600e9), make([]byte, StateSize), "DE", uint32(3320), float32(52.5), float32(13.4), int64(60e9))
	f.Add(int64(-1), []byte{0xff, 0xff, 0xff, 0xff}, "JP", uint32(0), float32(91), float32(-181), int64(-1))
	f.Add(int64(math.MaxInt64), make([]byte, 64), "\x00A", ^uint32(0), float32(math.NaN()), float32(math.Inf(1)), int64(1))
	fleet := NewStats(detectors.NewClassTable(1024, 1024))
	f.Fuzz(func(t *testing.T, tm int64, state []byte, country string, asn uint32, lat, lon float32, step int64) {
		st := make([]byte, StateSize)
		copy(st, state)
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.SetClass([]byte("meter/x"))
		if len(country) >= 2 {
			ev.Country = schemas.Country{country[0], country[1]}
		}
		ev.ASN, ev.Lat, ev.Lon, ev.Time = asn, lat, lon, tm
		var d Detector
		for i := range 4 {
			fd := d.Observe(&ev, st, fleet)
			if math.IsNaN(fd.Observed) || math.IsInf(fd.Observed, 0) || math.IsNaN(fd.Expected) || math.IsInf(fd.Expected, 0) {
				t.Fatalf("call %d: not finite: %+v", i, fd)
			}
			switch fd.Reason {
			case schemas.ReasonNone:
			case ReasonNewCountry, ReasonImpossibleTravel, ReasonASNChange, ReasonRareFleetCountry:
				if !(fd.Score > 0 && fd.Score <= 1) {
					t.Fatalf("call %d: score %v", i, fd.Score)
				}
			default:
				t.Fatalf("call %d: undeclared reason %q", i, fd.Reason)
			}
			fleet.learn(&ev)
			ev.Time += step
			ev.Lat, ev.Lon = -ev.Lat, ev.Lon/2
		}
	})
}
