package geo

import (
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// refDistanceKm is the haversine distance with the standard library's trigonometry.
func refDistanceKm(lat1, lon1, lat2, lon2 float64) float64 {
	r := math.Pi / 180
	dla, dlo := (lat2-lat1)*r, (lon2-lon1)*r
	h := math.Sin(dla/2)*math.Sin(dla/2) + math.Cos(lat1*r)*math.Cos(lat2*r)*math.Sin(dlo/2)*math.Sin(dlo/2)
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(h))
}

func TestDistance(t *testing.T) {
	f := func(name string, lat1, lon1, lat2, lon2, wantKm float64) {
		t.Helper()
		a, b := makeLocation(lat1, lon1, 1), makeLocation(lat2, lon2, 1)
		got := havDistanceKm(haversine(a, b))
		ref := refDistanceKm(lat1, lon1, lat2, lon2)
		// Quantization moves a point by at most ~0.5 km.
		if math.Abs(got-ref) > 1 || math.Abs(got-wantKm) > 0.01*wantKm+1 {
			t.Errorf("%s: %.1f km, reference %.1f km, want about %.0f km", name, got, ref, wantKm)
		}
		if back := havDistanceKm(haversine(b, a)); back != got {
			t.Errorf("%s: not symmetric: %.3f and %.3f km", name, got, back)
		}
	}
	f("Berlin-Tokyo", 52.52, 13.40, 35.68, 139.69, 8920)
	f("Berlin-Potsdam", 52.52, 13.40, 52.39, 13.06, 27)
	f("across the date line", 64.5, 179.5, 64.5, -179.5, 48)
	f("pole to pole", 90, 0, -90, 0, 20015)
	f("antipodes", 0, 0, 0, 180, 20015)
	f("same place", 48.1, 11.6, 48.1, 11.6, 0)
	for _, km := range []float64{0, 50, 500, 5000, 19000} {
		if got := havDistanceKm(havKm(km)); math.Abs(got-km) > 1e-6*km+1e-9 {
			t.Errorf("havKm(%v) converts back to %v km", km, got)
		}
	}
	if havKm(30000) != 1 {
		t.Errorf("havKm beyond half the circumference = %v, want 1", havKm(30000))
	}
}

func TestSinHalfPi(t *testing.T) {
	for x := -math.Pi; x <= math.Pi; x += 0.001 {
		if got, want := sinFold(x), math.Sin(x); math.Abs(got-want) > 1e-9 {
			t.Fatalf("sinFold(%v) = %v, want %v", x, got, want)
		}
	}
}

func TestCentroids(t *testing.T) {
	n := 0
	for i, c := range centroids {
		if c.radius == 0 {
			continue
		}
		n++
		if !(c.lat >= -90 && c.lat <= 90 && c.lon >= -180 && c.lon <= 180 && c.radius < 3000) {
			t.Errorf("entry %d: %+v out of range", i, c)
		}
	}
	if n < 240 {
		t.Errorf("%d countries in the table, want the ~250 of ISO 3166-1", n)
	}
	// Countries of the simulated fleet and its attackers, and their neighbours:
	// the centroids are closer than the uncertainties (no travel when roaming).
	for _, pair := range [][2]string{{"DE", "FR"}, {"DE", "AT"}, {"DE", "NL"}, {"US", "CA"}, {"BR", "AR"}, {"FR", "ES"}} {
		a, b := country(pair[0]), country(pair[1])
		if !a.known() || !b.known() {
			t.Fatalf("%v: missing from the table", pair)
		}
		if d := havDistanceKm(haversine(a, b)); d >= a.radiusKm()+b.radiusKm() {
			t.Errorf("%v: centroids %.0f km apart, beyond the %v+%v km of uncertainty", pair, d, a.radiusKm(), b.radiusKm())
		}
	}
	for _, pair := range [][2]string{{"DE", "JP"}, {"DE", "BR"}, {"FR", "CN"}, {"US", "VN"}} {
		a, b := country(pair[0]), country(pair[1])
		if d := havDistanceKm(haversine(a, b)) - a.radiusKm() - b.radiusKm(); d < TravelMinKm {
			t.Errorf("%v: only %.0f km beyond the uncertainty, want at least %v", pair, d, TravelMinKm)
		}
	}
	if country("ZZ").known() || country("d\x00").known() {
		t.Errorf("an unassigned or malformed code has a centroid")
	}
}

func country(code string) location {
	ev := schemas.Event{Country: schemas.Country{code[0], code[1]}}
	return eventLocation(&ev)
}

func TestEventLocationPrefersCoordinates(t *testing.T) {
	ev := schemas.Event{Country: schemas.Country{'D', 'E'}, Lat: 48.14, Lon: 11.58}
	if l := eventLocation(&ev); l.radiusKm() != CoordRadiusKm || l != makeLocation(48.14, 11.58, CoordRadiusKm) {
		t.Errorf("with coordinates: %+v", l)
	}
	ev.Lat, ev.Lon = float32(math.NaN()), 0
	if l := eventLocation(&ev); l != country("DE") {
		t.Errorf("with NaN coordinates: %+v, want the centroid %+v", l, country("DE"))
	}
}

func TestDecayByteKeepsTheExpectedValue(t *testing.T) {
	// One day of events every 5 minutes from 200: each step is far below one
	// unit, yet the mean decays like exp(-1/7).
	const runs, steps = 2000, 288
	sum := 0.0
	for r := range runs {
		b := uint8(200)
		for i := range steps {
			b = decayByte(b, 300/MobilityTau, uint64(r)<<32|uint64(i))
		}
		sum += float64(b)
	}
	want := 200 * math.Exp(-86400/MobilityTau)
	if mean := sum / runs; math.Abs(mean-want) > 2 {
		t.Errorf("mean after a day %.1f, want %.1f", mean, want)
	}
	if decayByte(0, 1, 7) != 0 || decayByte(255, 0, 7) != 255 {
		t.Errorf("decayByte moves 0 or does not keep 255 without time")
	}
}

func TestASNLabel(t *testing.T) {
	for asn, want := range map[uint32]string{0: "AS0", 3320: "AS3320", math.MaxUint32: "AS4294967295"} {
		if got := asnLabel(asn).String(); got != want {
			t.Errorf("asnLabel(%d) = %q, want %q", asn, got, want)
		}
	}
}
