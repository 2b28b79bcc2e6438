package volume

import (
	"math"
	"testing"
)

// TestCoreStep: scores stay in [0,1] and finite whatever the values, a spike
// after a calm stretch scores above every calm step, and a core restored from
// its marshalled bytes continues like the original (to float32 precision).
func TestCoreStep(t *testing.T) {
	p := DefaultCoreParams
	var c Core
	t0 := int64(1.4e18)
	calm := float32(0)
	for i := range 500 {
		s, z, e := c.Step(&p, t0+int64(i)*300e9, 100+float64(i%5))
		if math.IsNaN(z) || math.IsNaN(e) || !(s >= 0 && s <= 1) {
			t.Fatalf("step %d: score %g surprise %g expected %g", i, s, z, e)
		}
		if i > 100 {
			calm = max(calm, s)
		}
	}
	b := c.MarshalBinary(nil)
	if len(b) != CoreSize {
		t.Fatalf("marshalled %d bytes, want CoreSize %d", len(b), CoreSize)
	}
	var d Core
	d.UnmarshalBinary(b)
	s1, _, e1 := c.Step(&p, t0+500*300e9, 900)
	s2, _, e2 := d.Step(&p, t0+500*300e9, 900)
	if !(s1 > calm) || math.Abs(float64(s1-s2)) > 1e-3 || math.Abs(e1-e2) > 1e-3*e1 {
		t.Errorf("spike: score %g (restored %g), expected %g (restored %g); max calm score %g", s1, s2, e1, e2, calm)
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -5, 0, 1e300} {
		if s, z, e := c.Step(&p, t0+600*300e9, v); !(s >= 0 && s <= 1) || math.IsNaN(z) || math.IsNaN(e) || math.IsInf(e, 0) {
			t.Errorf("value %g: score %g surprise %g expected %g", v, s, z, e)
		}
	}
	var g Core
	g.UnmarshalBinary([]byte{1, 2, 3})
	if g != (Core{}) {
		t.Errorf("a short record read as %+v, want no history", g)
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
