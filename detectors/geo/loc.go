package geo

import (
	"math"

	"github.com/iotwatch/iotwatch/schemas"
)

// centroids.go is generated from the npm package world-countries (ODbL-1.0):
//
//	npm pack world-countries@5.1.0 && tar xzf world-countries-5.1.0.tgz
//	go run gen_centroids.go package/countries.json
//
//go:generate go run gen_centroids.go package/countries.json

// centroid is a country's reference point and equal-area radius (km).
type centroid struct {
	lat, lon, radius float32
}

// countryIndex returns c's index in centroids, or -1 when c is not two
// upper-case letters.
func countryIndex(c schemas.Country) int {
	if c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
		return -1
	}
	return int(c[0]-'A')*26 + int(c[1]-'A')
}

// location is where an event came from, as precisely as known: the stored
// form (1/360° of latitude, 1/180° of longitude, about 300 m and 600 m at the
// equator) and an uncertainty radius in units of RadiusUnitKm, rounded up;
// radius 0 means unknown.
type location struct {
	lat, lon int16
	radius   uint8
}

// RadiusUnitKm is the unit of stored uncertainty radii (at most 255 units).
const RadiusUnitKm = 25.0

func (l location) known() bool { return l.radius > 0 }

// radiusKm is the uncertainty radius in km.
func (l location) radiusKm() float64 { return float64(l.radius) * RadiusUnitKm }

// makeLocation quantizes degrees into a location of the given radius.
func makeLocation(lat, lon, radius float64) location {
	return location{
		lat:    int16(math.Round(max(-90, min(90, lat)) * 360)),
		lon:    int16(math.Round(max(-180, min(180, lon)) * 180)),
		radius: uint8(max(1, min(math.MaxUint8, math.Ceil(radius/RadiusUnitKm)))),
	}
}

// centroidLocs is centroids as locations with their uncertainty radius
// (CentroidRadiusFactor times the equal-area radius plus CentroidRadiusPadKm),
// quantized once so that Observe does no arithmetic for them.
var centroidLocs [len(centroids)]location

func init() {
	for i, c := range centroids {
		if c.radius > 0 {
			centroidLocs[i] = makeLocation(float64(c.lat), float64(c.lon),
				CentroidRadiusFactor*float64(c.radius)+CentroidRadiusPadKm)
		}
	}
}

// eventLocation returns ev's coordinates when it has them (radius
// CoordRadiusKm), else its country's centroid, else an unknown location.
func eventLocation(ev *schemas.Event) location {
	lat, lon := float64(ev.Lat), float64(ev.Lon)
	if (lat != 0 || lon != 0) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 {
		return makeLocation(lat, lon, CoordRadiusKm)
	}
	if i := countryIndex(ev.Country); i >= 0 {
		return centroidLocs[i]
	}
	return location{}
}

// earthRadiusKm is the mean Earth radius.
const earthRadiusKm = 6371.0

// haversine returns hav(θ) = sin²(θ/2) of the central angle θ between a and b:
// a cheap, monotonic stand-in for the distance, compared with havKm of a
// threshold so that Observe computes a distance (an arcsine) only for a
// finding.
func haversine(a, b location) float64 {
	const latUnit, lonUnit = math.Pi / 180 / 360, math.Pi / 180 / 180
	la1, la2 := float64(a.lat)*latUnit, float64(b.lat)*latUnit
	s1 := sinHalfPi((la2 - la1) / 2)
	s2 := sinFold(float64(int32(b.lon)-int32(a.lon)) * lonUnit / 2)
	h := s1*s1 + sinHalfPi(math.Pi/2-math.Abs(la1))*sinHalfPi(math.Pi/2-math.Abs(la2))*s2*s2
	return min(1, max(0, h))
}

// havKm is haversine's value for a distance of km (1 beyond half the Earth's
// circumference).
func havKm(km float64) float64 {
	x := km / (2 * earthRadiusKm)
	if x >= math.Pi/2 {
		return 1
	}
	s := sinHalfPi(x)
	return s * s
}

// havDistanceKm converts haversine's value to km.
func havDistanceKm(h float64) float64 {
	return 2 * earthRadiusKm * math.Asin(math.Sqrt(h))
}

// sinFold is sin for x in [-π, π], folded into [-π/2, π/2].
func sinFold(x float64) float64 {
	switch {
	case x > math.Pi/2:
		x = math.Pi - x
	case x < -math.Pi/2:
		x = -math.Pi - x
	}
	return sinHalfPi(x)
}

// sinHalfPi is sin for x in [-π/2, π/2] by its Taylor series to x¹³
// (error below 1e-9), several times cheaper than math.Sin: multiplications by
// constant coefficients only.
func sinHalfPi(x float64) float64 {
	const (
		c3  = -1.0 / 6
		c5  = 1.0 / 120
		c7  = -1.0 / 5040
		c9  = 1.0 / 362880
		c11 = -1.0 / 39916800
		c13 = 1.0 / 6227020800
	)
	x2 := x * x
	return x * (1 + x2*(c3+x2*(c5+x2*(c7+x2*(c9+x2*(c11+x2*c13))))))
}

// neighbours reports whether countries a and b neighbour each other: their
// centroids' uncertainty regions (centroidLocs) overlap, so that one is
// reached from the other without impossible travel. It is false when either
// is not in the table.
func neighbours(a, b schemas.Country) bool {
	i, j := countryIndex(a), countryIndex(b)
	if i < 0 || j < 0 || !centroidLocs[i].known() || !centroidLocs[j].known() {
		return false
	}
	l, m := centroidLocs[i], centroidLocs[j]
	return haversine(l, m) < havKm(l.radiusKm()+m.radiusKm())
}
