package volume

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
)

// TestStepReference: Step leaves every core's record and returns every
// value exactly as the Core's step did before its shortcuts (the square
// root of the value taken once, calm/max(m, calm) without a division at
// or below calm, the unflagged learning rate as ec), kept below as
// stepReference: on series of every kind (steady, noisy, drifting up and
// down, heavy-tailed, with zeros), under both parameter sets, through
// warm-up, calibration above and below calm, and flagged values.
func TestStepReference(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, p := range []CoreParams{DefaultCoreParams, DetectorCoreParams} {
		var kinds [5]int
		for series := range 300 {
			var c, ref Core
			ts := int64(1.4e18) + r.Int64N(86400)*1e9
			level, noise, kind := math.Exp(r.Float64()*10), r.Float64(), series%5
			for i := range 1500 {
				x := level * (1 + noise*r.NormFloat64()*0.2)
				switch {
				case kind == 1 && i > 700: // a level shift
					x *= 5
				case kind == 2: // heavy tails
					x *= math.Exp(3 * r.ExpFloat64() * float64(r.IntN(2)))
				case kind == 3 && r.IntN(10) == 0:
					x = 0
				case kind == 4: // a slow drift down
					x *= math.Exp(-float64(i) / 1000)
				}
				ts += BucketNs
				point, drift, expected := c.Step(&p, ts, x)
				rPoint, rDrift, rExpected := stepReference(&ref, &p, ts, x)
				if c != ref || math.Float64bits(point) != math.Float64bits(rPoint) ||
					math.Float64bits(drift) != math.Float64bits(rDrift) || math.Float64bits(expected) != math.Float64bits(rExpected) {
					t.Fatalf("series %d step %d: Step %+v %v %v %v, reference %+v %v %v %v",
						series, i, c, point, drift, expected, ref, rPoint, rDrift, rExpected)
				}
				if !bytes.Equal(c.MarshalBinary(nil), ref.MarshalBinary(nil)) {
					t.Fatalf("series %d step %d: records differ", series, i)
				}
				if max(point, drift) >= p.FlagSurprise {
					kinds[0]++
				}
				if c.mPoint > 1/math.Ln10 {
					kinds[1]++
				} else {
					kinds[2]++
				}
			}
		}
		if kinds[0] < 1000 || kinds[1] < 1000 || kinds[2] < 1000 {
			t.Errorf("%+v: %d flagged steps, %d calibrated above calm, %d not: too few", p, kinds[0], kinds[1], kinds[2])
		}
		t.Logf("Daily %v: %d flagged steps, %d calibrated above calm, %d not", p.Daily, kinds[0], kinds[1], kinds[2])
	}
}

// stepReference is the Core's step as it was before its shortcuts
// (af388e4), without the scored path (Step never took it).
func stepReference(c *Core, p *CoreParams, t int64, x float64) (point, drift, expected float64) {
	if !(x >= 0) { // NaN, negative
		if x < 0 && !math.IsInf(x, -1) {
			x = -x // a signed series: model its magnitude
		} else {
			x = 0
		}
	}
	if math.IsInf(x, 1) || x > maxCount {
		x = maxCount
	}
	y := math.Sqrt(x)
	cs, sn := 0.0, 0.0
	if p.Daily {
		sn, cs = dayPhase(t)
	}
	if c.n == 0 {
		c.level = y
		c.dev = 0
	}
	pred := c.level + c.cos*cs + c.sin*sn
	if pred < 0 {
		pred = 0
	}
	expected = pred * pred
	r := y - pred
	scale := max(1.2533*c.dev, 0.5*p.FloorScale, 1e-9)
	z := r / scale

	// Drift: EW mean of scaled residuals (clipped) and its standard error.
	a, iid := driftWeight(p.Short)
	c.drift = (1-a)*c.drift + a*clip(z, 2*p.Clip)
	// The drift's scale is learned too: residuals of real series are
	// autocorrelated, so the iid standard error would be far too small. The
	// iid value is its floor.
	se := max(1.2533*c.driftDev, iid)
	zd := c.drift / se

	// Calibration: a well-specified model's surprise (-log10 of a tail
	// probability) averages 1/ln 10; a series whose surprises average more has
	// heavier tails than the model, and its surprises are scaled down by as much.
	// With p.Upward, values below the baseline are not surprising (and the
	// Gaussian tail's Erfc is not computed for them).
	sPoint, sDrift := 0.0, 0.0
	if !(p.Upward && z < 0) {
		sPoint = laplaceSurprise(z)
	}
	const calm = 1 / math.Ln10
	cp, cd := calm/max(c.mPoint, calm), calm/max(c.mDrift, calm)
	if c.n < p.Warm {
		cp, cd = 1, 1
	}
	point = sPoint * cp
	ec := 1 / min(float64(c.n+1), p.Long)
	if !(p.Upward && zd < 0) {
		sDrift = gaussSurprise(zd)
	}
	drift = sDrift * cd
	c.mPoint += ec * (min(sPoint, p.CalCap) - c.mPoint)
	c.mDrift += ec * (min(sDrift, p.CalCap) - c.mDrift)

	// Learn, robustly.
	w := 1.0
	if c.n >= p.Warm && max(point, drift) >= p.FlagSurprise {
		w = p.FlaggedWeight
	}
	eta := w / min(float64(c.n+1), p.Long)
	rc := clip(r, p.Clip*scale)
	if c.n < p.Warm { // no scale yet: learn plainly
		rc = r
	}
	c.level += eta * rc
	if p.Daily {
		c.cos += 2 * eta * rc * cs
		c.sin += 2 * eta * rc * sn
	}
	c.dev += eta * (min(math.Abs(r), p.Clip*scale) - c.dev)
	c.driftDev += eta * (min(math.Abs(c.drift), p.Clip*se) - c.driftDev)
	if c.n < p.Warm {
		c.dev += eta * (math.Abs(r) - c.dev)
	}
	if c.n < math.MaxUint32 {
		c.n++
	}
	if c.n <= p.Warm { // c.n was incremented above
		point, drift = 0, 0
	}
	return point, drift, expected
}

// TestObserveIdentities: the exact forms Observe skips where their value is
// known give that value, bit for bit: a zero count of oversized responses
// decayed over any gap (plus 0 or 1), a run's expected count read from a
// stored 0 and stored as 0 for every run length, and the mean of a bucket
// of one response.
func TestObserveIdentities(t *testing.T) {
	same := func(what string, got, want float64) {
		t.Helper()
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
	r := rand.New(rand.NewPCG(17, 18))
	one, zero := uint16(1+r.IntN(1)), uint16(r.IntN(1)) // as a record reads them (not constants)
	for range 200_000 {
		dt := math.Exp(r.Float64()*30 - 15) // 3e-7 s to 3e6 s
		for _, over := range []float64{0, 1} {
			same("0 decayed", 0*detectors.Decay(dt/TauMedium)+over, over)
		}
		b := r.Float64() * math.Exp(r.Float64()*60)
		same("one response's mean", b/float64(one), b)
	}
	for n := range uint16(MaxRun + 1) {
		same("stored 0 read", float64(zero)/math.MaxUint16*float64(n)*runSpan, 0)
		if n > 0 {
			q := min(0/(float64(n)*runSpan), 1)
			if uint16(q*math.MaxUint16+0.5) != 0 {
				t.Fatalf("run of %d: 0 stored as %v", n, q)
			}
		}
	}
}
