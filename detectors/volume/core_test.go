package volume

import (
	"encoding/binary"
	"math"
	"testing"
)

// TestCoreStep: surprises stay finite and non-negative whatever the values, a
// spike after a calm stretch is more surprising than every calm step, and a
// core restored from its marshalled bytes continues like the original (to
// float32 precision).
func TestCoreStep(t *testing.T) {
	p := DefaultCoreParams
	var c Core
	t0 := int64(1.4e18)
	calm := 0.0
	for i := range 500 {
		z, zd, e := c.Step(&p, t0+int64(i)*300e9, 100+float64(i%5))
		if !(z >= 0) || !(zd >= 0) || math.IsNaN(e) {
			t.Fatalf("step %d: surprises %g, %g expected %g", i, z, zd, e)
		}
		if i > 100 {
			calm = max(calm, z, zd)
		}
	}
	b := c.MarshalBinary(nil)
	if len(b) != CoreSize {
		t.Fatalf("marshalled %d bytes, want CoreSize %d", len(b), CoreSize)
	}
	var d Core
	d.UnmarshalBinary(b)
	z1, zd1, e1 := c.Step(&p, t0+500*300e9, 900)
	z2, zd2, e2 := d.Step(&p, t0+500*300e9, 900)
	s1, s2 := max(z1, zd1), max(z2, zd2)
	if !(s1 > calm) || math.Abs(s1-s2) > 1e-3*s1 || math.Abs(e1-e2) > 1e-3*e1 {
		t.Errorf("spike: surprise %g (restored %g), expected %g (restored %g); max calm surprise %g", s1, s2, e1, e2, calm)
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -5, 0, 1e300} {
		if z, zd, e := c.Step(&p, t0+600*300e9, v); !(z >= 0) || math.IsInf(z, 0) || !(zd >= 0) || math.IsInf(zd, 0) || math.IsNaN(e) || math.IsInf(e, 0) {
			t.Errorf("value %g: surprises %g, %g expected %g", v, z, zd, e)
		}
	}
	var g Core
	g.UnmarshalBinary([]byte{1, 2, 3})
	if g != (Core{}) {
		t.Errorf("a short record read as %+v, want no history", g)
	}
}

// TestCoreDriftUpward: with the detector's parameters (daily harmonic, right
// tail), a noisy daily cycle gives no drift surprise above the detector's
// threshold, a drop gives none at all, and a lasting 2.5x rise does, from its
// drift (the hour-long mean) rather than from one value.
func TestCoreDriftUpward(t *testing.T) {
	p := DetectorCoreParams
	run := func(level float64) (maxPoint, maxDrift float64) {
		var c Core
		t0 := int64(1.4e18)
		i := 0
		step := func(factor float64) (float64, float64) {
			i++
			ts := t0 + int64(i)*300e9
			day := 1 + 0.3*math.Sin(2*math.Pi*float64(ts%dayNs)/float64(dayNs))
			noise := 1 + 0.1*math.Sin(float64(i)*1.7) // deterministic wobble
			z, zd, _ := c.Step(&p, ts, 20000*day*noise*factor)
			return z, zd
		}
		for range 576 * 3 { // three days of 5-minute buckets
			z, zd := step(1)
			if i > 576 && max(z, zd) >= 6 {
				t.Fatalf("step %d of a steady daily cycle: point %.1f drift %.1f decades", i, z, zd)
			}
		}
		for range 24 { // two hours at the new level
			z, zd := step(level)
			maxPoint, maxDrift = max(maxPoint, z), max(maxDrift, zd)
		}
		return maxPoint, maxDrift
	}
	if z, zd := run(0.2); z != 0 || zd != 0 {
		t.Errorf("a drop to 20%%: point %.2f drift %.2f decades; want 0 (right tail only)", z, zd)
	}
	if _, zd := run(2.5); !(zd >= 6) {
		t.Errorf("a lasting 2.5x rise: drift %.2f decades; want at least 6", zd)
	}
}

func BenchmarkCoreStep(b *testing.B) {
	p := DefaultCoreParams
	var c Core
	t := int64(1.4e18)
	b.ReportAllocs()
	for b.Loop() {
		t += 300e9
		c.Step(&p, t, float64(100+t%7))
	}
}

// TestDayPhaseTable checks dayPhase against Step's former expression, bit
// for bit: at every bucket boundary of two days (the table), around them,
// and at times before 1970.
func TestDayPhaseTable(t *testing.T) {
	old := func(t int64) (float64, float64) {
		return math.Sincos(2 * math.Pi * float64(((t%dayNs)+dayNs)%dayNs) / float64(dayNs))
	}
	base := int64(1736121600e9)
	for _, t0 := range []int64{base, -base - 7*dayNs} {
		for i := int64(0); i <= 2*dayNs/BucketNs; i++ {
			for _, d := range []int64{0, 1, -1, 1e9, BucketNs / 2} {
				at := t0 + i*BucketNs + d
				sn, cs := dayPhase(at)
				wsn, wcs := old(at)
				if math.Float64bits(sn) != math.Float64bits(wsn) || math.Float64bits(cs) != math.Float64bits(wcs) {
					t.Fatalf("dayPhase(%d) = %v, %v; want %v, %v", at, sn, cs, wsn, wcs)
				}
			}
		}
	}
}

// TestDriftWeight checks the default window's precomputed drift weight and
// iid floor against the expressions Step computed them by, bit for bit, and
// that another window is still computed.
func TestDriftWeight(t *testing.T) {
	for _, short := range []float64{DefaultCoreParams.Short, DetectorCoreParams.Short, 6, 24, 1} {
		a, iid := driftWeight(short)
		wa := 1 / short
		wiid := math.Sqrt(wa / (2 - wa))
		if math.Float64bits(a) != math.Float64bits(wa) || math.Float64bits(iid) != math.Float64bits(wiid) {
			t.Errorf("driftWeight(%v) = %v, %v; want %v, %v", short, a, iid, wa, wiid)
		}
	}
}

// TestCoreUnmarshalRejects checks that a non-finite or huge value in any
// word the core uses reads as no history, and that the unused words (the
// detector's burst memory) are ignored.
func TestCoreUnmarshalRejects(t *testing.T) {
	var c Core
	p := DefaultCoreParams
	for i := range 100 {
		c.Step(&p, int64(i)*300e9, float64(10+i%7))
	}
	good := c.MarshalBinary(nil)
	var want Core
	want.UnmarshalBinary(good)
	if want == (Core{}) {
		t.Fatal("a valid core read as no history")
	}
	for w := range 10 {
		for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 2e12, -2e12} {
			b := append([]byte(nil), good...)
			binary.LittleEndian.PutUint32(b[4+4*w:], math.Float32bits(v))
			var d Core
			d.UnmarshalBinary(b)
			unused := w == 6 || w == 9
			if unused && d != want {
				t.Errorf("word %d (unused) = %v: read %+v; want %+v", w, v, d, want)
			}
			if !unused && d != (Core{}) {
				t.Errorf("word %d = %v: read %+v; want no history", w, v, d)
			}
		}
	}
}
