package detectors

import (
	"math"
	"testing"

	"gonum.org/v1/gonum/mathext"
)

func TestPoissonSurprise(t *testing.T) {
	// Against the exact tail P(X >= k) = P(k, mu), the regularized lower
	// incomplete gamma function: a lower bound within the documented slack.
	f := func(k, mu float64) {
		t.Helper()
		got := PoissonSurprise(k, mu)
		exact := -math.Log10(mathext.GammaIncReg(k, mu))
		if exact > 250 {
			return // the exact tail underflows float64 there; PoissonSurprise does not
		}
		slack := -math.Log10(1 - mu/(k+1))
		if got > exact+1e-9 || got < exact-slack-1e-9 {
			t.Errorf("PoissonSurprise(%v, %v) = %.4f; exact %.4f, slack %.4f", k, mu, got, exact, slack)
		}
	}
	for _, mu := range []float64{0.01, 0.1, 0.5, 1, 3, 10, 60, 300} {
		for _, ratio := range []float64{1.5, 2, 4, 8, 30} {
			k := math.Ceil(mu * ratio)
			if k < 1 || k > 2000 {
				continue
			}
			f(k, mu)
		}
	}
	f(8, 1)
	f(10, 0.5)
	f(45, 1)

	// Degenerate arguments.
	for _, c := range [][2]float64{{0, 1}, {1, 1}, {0.5, 1}, {5, 0}, {5, -1}, {math.NaN(), 1}, {5, math.NaN()},
		{math.Inf(1), 1}, {5, math.Inf(1)}} {
		if got := PoissonSurprise(c[0], c[1]); got != 0 {
			t.Errorf("PoissonSurprise(%v, %v) = %v; want 0", c[0], c[1], got)
		}
	}
	// Far tails do not underflow.
	if got := PoissonSurprise(1e6, 0.1); !(got > 1e6) || math.IsInf(got, 0) {
		t.Errorf("PoissonSurprise(1e6, 0.1) = %v; want a large finite value", got)
	}
}

func TestSurpriseScore(t *testing.T) {
	f := func(z, want float64) {
		t.Helper()
		if got := SurpriseScore(z, 6); math.Abs(float64(got)-want) > 1e-6 {
			t.Errorf("SurpriseScore(%v, 6) = %v; want %v", z, got, want)
		}
	}
	f(0, 0)
	f(5.99, 0)
	f(6, 0.5)
	f(10, 0.75)
	f(14, 0.875)
	f(1e9, 1)
	f(math.Inf(1), 1)
	f(math.NaN(), 0)
	// A surprise scores exactly when it reaches zMin (volume decides
	// whether a run scores by the comparison, and scores only the one kept).
	for _, zMin := range []float64{3, 6} {
		for _, z := range []float64{math.NaN(), math.Inf(-1), -1, 0, zMin - 1e-9, math.Nextafter(zMin, 0), zMin,
			math.Nextafter(zMin, 100), zMin + 1e-9, zMin + 50, zMin + 99.999, zMin + 100, zMin + 101, 1e300, math.Inf(1)} {
			if got := SurpriseScore(z, zMin); (got > 0) != (z >= zMin) || got < 0 || got > 1 {
				t.Errorf("SurpriseScore(%v, %v) = %v; want > 0 exactly when z >= zMin, in [0,1]", z, zMin, got)
			}
		}
	}
}

func TestDecay(t *testing.T) {
	for _, x := range []float64{0, 1e-9, 1e-4, 0.01, 1.0 / 64, 0.02, 0.0624, 1.0 / 16, 0.5, 1, 3, 50, 800, math.Inf(1)} {
		got, want := Decay(x), math.Exp(-x)
		if math.Abs(got-want) > 1e-8*want {
			t.Errorf("Decay(%v) = %v; want %v", x, got, want)
		}
	}
	for _, x := range []float64{-1, math.NaN(), math.Inf(-1)} {
		if got := Decay(x); got != 1 {
			t.Errorf("Decay(%v) = %v; want 1", x, got)
		}
	}
}

func TestLayout(t *testing.T) {
	l := NewLayout([]Spec{{Name: "a", StateSize: 3}, {Name: "b", StateSize: 5}})
	if l.Size != 8 || l.Offsets[1] != 3 {
		t.Fatalf("layout = %+v; want size 8, offsets [0 3]", l)
	}
	rec := make([]byte, l.Size)
	a := l.State(rec, 0)
	a = append(a, 0xff) // must not overwrite b's state
	if rec[3] != 0 || len(l.State(rec, 1)) != 5 {
		t.Fatalf("State(0) is not capped: record %v", rec)
	}
	_ = a
}

func BenchmarkPoissonSurprise(b *testing.B) {
	b.ReportAllocs()
	k := 45.0
	var sink float64
	for b.Loop() {
		sink += PoissonSurprise(k, 1)
	}
	_ = sink
}

func TestGapSurprise(t *testing.T) {
	// exp(-gap/mean) = 1e-6 at gap = 6 ln 10 mean gaps.
	if got := GapSurprise(6*math.Ln10*30, 30); math.Abs(got-6) > 1e-9 {
		t.Errorf("GapSurprise(6 ln10 · 30, 30) = %v; want 6", got)
	}
	for _, c := range [][2]float64{{0, 30}, {-5, 30}, {60, 0}, {math.NaN(), 30}, {math.Inf(1), 30}, {60, math.Inf(1)}} {
		if got := GapSurprise(c[0], c[1]); got != 0 {
			t.Errorf("GapSurprise(%v, %v) = %v; want 0", c[0], c[1], got)
		}
	}
}
