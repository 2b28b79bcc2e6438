package volume

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
)

// TestGaussTail: gaussTail's bounds hold gaussSurprise on a dense grid of
// its range and at random points in it, and are tight (1e-13 of the value).
func TestGaussTail(t *testing.T) {
	check := func(z float64) {
		t.Helper()
		lo, hi := gaussTail(z)
		s := gaussSurprise(z)
		if !(lo <= s && s <= hi) || !(hi-lo < 1e-13*s) {
			t.Fatalf("z %v: gaussSurprise %v, bounds [%v, %v]", z, s, lo, hi)
		}
	}
	for z := gaussTailMin; z < gaussTailMax; z += 1e-5 {
		check(z)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1_000_000 {
		check(gaussTailMin + r.Float64()*(gaussTailMax-gaussTailMin))
	}
}

// TestStepScore: on devices whose mean response size drifts up (by 2% to 4x,
// at random times, with noise), StepScore of y leaves every core's record
// exactly as Step of y*y does, returns the root of its expected value (the
// square of which is Step's, and TestSqrtOfSquare its root) and scores its
// drift exactly as detectors.SurpriseScore does,
// each step from the record of the one before (as the Detector runs it);
// thousands of the steps are drift findings.
func TestStepScore(t *testing.T) {
	p := DetectorCoreParams
	r := rand.New(rand.NewPCG(3, 4))
	findings, tail := 0, 0
	for dev := range 400 {
		var c Core
		ts := int64(1.4e18) + r.Int64N(86400)*1e9
		size := 200 + r.Float64()*5000
		start, factor := r.IntN(900), 1.02+r.Float64()*3
		for i := range 1200 {
			if i == start {
				size *= factor
			}
			if i > start && r.IntN(20) == 0 {
				size *= 1 + r.Float64()*0.2 // keeps drifting
			}
			y := LogScale * math.Log1p(size*(1+0.05*r.NormFloat64()))
			ts += BucketNs
			d := c
			point, drift, expected := c.Step(&p, ts, y*y)
			want := detectors.SurpriseScore(drift, MinDriftSurprise)
			dPoint, score, dPred := d.StepScore(&p, ts, y, MinDriftSurprise)
			dExpected := dPred * dPred
			rec, dRec := c.MarshalBinary(nil), d.MarshalBinary(nil)
			if !bytes.Equal(rec, dRec) || score != want || math.Float64bits(point) != math.Float64bits(dPoint) || math.Float64bits(expected) != math.Float64bits(dExpected) {
				t.Fatalf("device %d step %d: Step %+v score %v point %v expected %v; StepScore %+v score %v point %v expected %v",
					dev, i, c, want, point, expected, d, score, dPoint, dExpected)
			}
			if want > 0 {
				findings++
				if drift >= p.CalCap {
					tail++
				}
			}
			c.UnmarshalBinary(c.MarshalBinary(nil)) // as the detector's record
		}
	}
	if findings < 2000 || tail < findings/2 {
		t.Errorf("%d drift findings, %d of them at least %v decades: too few far in the tail", findings, tail, p.CalCap)
	}
	t.Logf("%d drift findings, %d of them at least %v decades", findings, tail, p.CalCap)
}

// TestHalfPow2: 2·halfPow2(u) is within 1e-14 of math.Exp2(u/64)
// (relative) over its range, at every 1/4096, its neighbours and the
// halves between (where the nearest integer turns).
func TestHalfPow2(t *testing.T) {
	for x := -1664.0; x <= 0; x += 1.0 / 4096 {
		for _, u := range []float64{x, math.Nextafter(x, 0), math.Nextafter(x, -2000), x + 1.0/8192, math.Round(x) + 0.5} {
			if u < -1664 || u > 0 {
				continue
			}
			if got, want := 2*halfPow2(u), math.Exp2(u/64); math.Abs(got-want) > 1e-14*want {
				t.Fatalf("2·halfPow2(%v) = %v, math.Exp2(%v/64) %v", u, got, u, want)
			}
		}
	}
}

// TestScoreBetween: a score scoreBetween returns is SurpriseScore's at both
// ends and the middle of its interval, on intervals as wide as gaussTail's
// and 1e-8 wide (where most must be refused).
func TestScoreBetween(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, width := range []float64{1e-13, 1e-8} {
		ok := 0
		for range 1_000_000 {
			lo := MinDriftSurprise - 1 + r.Float64()*110
			hi := lo * (1 + width)
			s, sure := scoreBetween(lo, hi, MinDriftSurprise)
			if !sure {
				continue
			}
			ok++
			for _, z := range []float64{lo, (lo + hi) / 2, hi} {
				if want := detectors.SurpriseScore(z, MinDriftSurprise); s != want {
					t.Fatalf("[%v, %v]: score %v, SurpriseScore(%v) %v", lo, hi, s, z, want)
				}
			}
		}
		t.Logf("width %g: %d of 1000000 decided", width, ok)
	}
}

// TestSqrtOfSquare: the square root of a square (rounded) is the number
// squared, bit for bit, for every y StepScore takes (the root of a value up
// to maxCount: at every ulp of y near the range's ends and at powers of two,
// millions of random y spread over its binades, and every log size the
// Detector feeds) and every pred it returns (up to the root of maxCount
// times the harmonic's amplitude; any finite positive float without
// overflow or underflow in fact): StepScore(y) is Step(y*y) and the
// Detector's expected response size, Expm1(pred/LogScale), is the one
// Step's expected gave, Expm1(Sqrt(pred*pred)/LogScale).
func TestSqrtOfSquare(t *testing.T) {
	check := func(y float64) {
		t.Helper()
		if got := math.Sqrt(y * y); math.Float64bits(got) != math.Float64bits(y) {
			t.Fatalf("Sqrt(%v * %v) = %v", y, y, got)
		}
	}
	check(0)
	for _, y := range []float64{1e-150, 1, math.Sqrt(maxCount), 1e12, 1e150} {
		v := y
		for range 100_000 {
			check(v)
			v = math.Nextafter(v, math.Inf(1))
		}
		v = y
		for range 100_000 {
			v = math.Nextafter(v, 0)
			check(v)
		}
	}
	for e := -500; e <= 500; e++ {
		check(math.Ldexp(1, e))
	}
	r := rand.New(rand.NewPCG(7, 8))
	for range 1_000_000 {
		check(math.Ldexp(1+r.Float64(), r.IntN(1001)-500)) // every binade from 2^-500 to 2^501
		check(r.Float64() * math.Sqrt(maxCount) * 4)
	}
	for size := range 1 << 20 {
		check(LogScale * math.Log1p(float64(size)))
	}
}

// TestLnTail: lnTail is within 2e-15 of math.Log (itself within an ulp of
// ln x, 4e-16 here) on a dense grid of [2, 32) and at random points in it.
func TestLnTail(t *testing.T) {
	worst := 0.0
	check := func(x float64) {
		t.Helper()
		d := math.Abs(lnTail(x) - math.Log(x))
		if d > 2e-15 {
			t.Fatalf("lnTail(%v) = %v, math.Log %v", x, lnTail(x), math.Log(x))
		}
		worst = max(worst, d)
	}
	for x := 2.0; x < 32; x += 1e-5 {
		check(x)
		check(math.Nextafter(x, 0))
	}
	r := rand.New(rand.NewPCG(11, 12))
	for range 1_000_000 {
		check(2 + r.Float64()*30)
	}
	t.Logf("largest difference %g", worst)
}
