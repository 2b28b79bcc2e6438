package detectors

import "math"

// PoissonSurprise returns how surprising a count of at least k is when mu is
// expected, in decades: -log10 P(X >= k) for X ~ Poisson(mu). It accepts a
// non-integer k (a decayed count), works in log space so that it never
// underflows, and returns 0 when k <= mu or either argument is not a finite
// positive number.
//
// It uses the first term of the tail and a geometric bound on the rest:
// P(X >= k) <= pmf(k) / (1 - mu/(k+1)), so the result is a lower bound of the
// exact surprise, within log10(1/(1-mu/(k+1))) of it (0.12 decades for k >= 4mu).
// It does not allocate; it costs one Lgamma and two Logs (~40 ns).
func PoissonSurprise(k, mu float64) float64 {
	if !(mu > 0) || !(k > mu) || math.IsInf(k, 1) {
		return 0
	}
	lg, _ := math.Lgamma(k + 1)
	lnp := k*math.Log(mu) - mu - lg
	if r := mu / (k + 1); r < 1 {
		lnp -= math.Log1p(-r)
	}
	if !(lnp < 0) {
		return 0
	}
	return -lnp / math.Ln10
}

// SurpriseScore maps a surprise z (in decades, see PoissonSurprise) to a score:
// 0 below zMin, 0.5 at zMin, and halfway closer to 1 for every further 4
// decades (0.75 at zMin+4, 0.875 at zMin+8). It never returns NaN.
func SurpriseScore(z, zMin float64) float32 {
	if !(z >= zMin) {
		return 0
	}
	if z-zMin > 100 {
		return 1 // 0.5*2^-25 and below round to 1 in float32
	}
	return float32(1 - 0.5*math.Exp2(-(z-zMin)/4))
}

// Decay returns exp(-x) for x >= 0, the factor a time-decayed value keeps
// after x time constants. Small arguments, the common case of a long time
// constant, take a quartic Taylor polynomial (relative error below 1e-8)
// instead of math.Exp; negative or NaN x returns 1.
func Decay(x float64) float64 {
	switch {
	case !(x > 0):
		return 1
	case x < 1.0/16:
		return 1 - x*(1-x*(0.5-x*(1.0/6-x*(1.0/24))))
	}
	return math.Exp(-x)
}

// Advance returns the seconds from *last to the event time t and moves *last
// forward to t. It returns 0 for a device's first event (first set) and for a
// late event (t before *last), which is counted but does not move time back.
func Advance(last *int64, first bool, t int64) float64 {
	dt := 0.0
	if !first && t > *last {
		dt = float64(uint64(t)-uint64(*last)) / 1e9
	}
	if first || t > *last {
		*last = t
	}
	return dt
}

// GapSurprise returns how surprising a gap of at least gap seconds without any
// event is for a Poisson stream with mean inter-arrival time meanGap, in
// decades: -log10 exp(-gap/meanGap). It returns 0 unless both are finite and
// positive.
func GapSurprise(gap, meanGap float64) float64 {
	if !(gap > 0 && meanGap > 0) || math.IsInf(gap, 1) || math.IsInf(meanGap, 1) {
		return 0
	}
	return gap / meanGap / math.Ln10
}
