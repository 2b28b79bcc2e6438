package volume

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLog1pCount: log1pCount is math.Log1p bit for bit on every integer up
// to 2^21, on the integers around every power of two up to 2^52 (where
// its branches turn), at maxCount and on millions of random integers up to
// maxCount and up to 2^53.
func TestLog1pCount(t *testing.T) {
	check := func(x float64) {
		t.Helper()
		if got, want := log1pCount(x), math.Log1p(x); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("log1pCount(%v) = %v (%#x), math.Log1p %v (%#x)", x, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	for x := range 1 << 21 {
		check(float64(x))
	}
	for e := 22; e < 53; e++ {
		for d := -1000; d <= 1000; d++ {
			check(float64(int64(1)<<e + int64(d)))
		}
	}
	check(maxCount)
	r := rand.New(rand.NewPCG(9, 10))
	for range 1_000_000 {
		check(float64(r.Int64N(maxCount + 1)))
		check(float64(r.Int64N(1 << 53)))
		check(math.Floor(math.Exp2(r.Float64() * 40))) // spread over the binades
	}
}
