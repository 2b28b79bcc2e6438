package detectors

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLog1pCount: Log1pCount is math.Log1p bit for bit on every integer up
// to 2^21, on the integers around every power of two up to 2^63 (where
// its branches turn), at 1e12 (the volume and upload detectors' caps), at
// the largest uint64 and on millions of random integers up to 1e12, up to
// 2^53 and up to 2^64.
func TestLog1pCount(t *testing.T) {
	check := func(x float64) {
		t.Helper()
		if got, want := Log1pCount(x), math.Log1p(x); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("Log1pCount(%v) = %v (%#x), math.Log1p %v (%#x)", x, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	for x := range 1 << 21 {
		check(float64(x))
	}
	for e := 22; e < 64; e++ {
		for d := -1000; d <= 1000; d++ {
			check(float64(uint64(1)<<e + uint64(int64(d))))
		}
	}
	check(1e12)
	check(float64(uint64(math.MaxUint64)))
	r := rand.New(rand.NewPCG(9, 10))
	for range 1_000_000 {
		check(float64(r.Int64N(1e12 + 1)))
		check(float64(r.Int64N(1 << 53)))
		check(float64(r.Uint64()))
		check(math.Floor(math.Exp2(r.Float64() * 40))) // spread over the binades
	}
}

// BenchmarkLog1pCount compares Log1pCount with math.Log1p on response
// sizes spread over 0 to ~1e9 bytes.
func BenchmarkLog1pCount(b *testing.B) {
	var xs [1024]float64
	r := rand.New(rand.NewPCG(1, 2))
	for i := range xs {
		xs[i] = math.Floor(math.Exp2(r.Float64() * 30))
	}
	for _, f := range []struct {
		name string
		fn   func(float64) float64
	}{{"math.Log1p", math.Log1p}, {"Log1pCount", Log1pCount}} {
		b.Run(f.name, func(b *testing.B) {
			sum, i := 0.0, 0
			for b.Loop() {
				sum += f.fn(xs[i&1023])
				i++
			}
			if sum < 0 {
				b.Fatal("negative logarithm")
			}
		})
	}
}
