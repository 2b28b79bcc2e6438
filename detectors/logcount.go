package detectors

import "math"

// Log1pCount is math.Log1p(x), bit for bit, for a count x: the float64 of
// an unsigned integer (an event's request or response size, float64 of
// ev.BytesIn or ev.BytesOut, capped or not). TestLog1pCount checks it
// against math.Log1p.
//
// It is math/log1p.go's algorithm (Go's, from FreeBSD's s_log1p.c) on the
// one path a count takes there, with the same operations in the same
// order: 0 returns 0, and for 1 <= x < 2^53 the sum 1+x is exact, so the
// correction term c = (1-((1+x)-x))/(1+x) is 0: its division, its addition
// and the special cases' tests (NaN, -1, infinities, tiny x) are skipped.
// A count of 2^53 or more (no real size) is math.Log1p's. Every
// event pays a few (the volume, upload and command detectors and their
// class statistics).
func Log1pCount(x float64) float64 {
	const (
		Ln2Hi = 6.93147180369123816490e-01 // 3fe62e42fee00000
		Ln2Lo = 1.90821492927058770002e-10 // 3dea39ef35793c76
		Lp1   = 6.666666666666735130e-01   // 3FE5555555555593
		Lp2   = 3.999999999940941908e-01   // 3FD999999997FA04
		Lp3   = 2.857142874366239149e-01   // 3FD2492494229359
		Lp4   = 2.222219843214978396e-01   // 3FCC71C51D8E78AF
		Lp5   = 1.818357216161805012e-01   // 3FC7466496CB03DE
		Lp6   = 1.531383769920937332e-01   // 3FC39A09D078C69F
		Lp7   = 1.479819860511658591e-01   // 3FC2F112DF3E5244
	)
	if x == 0 {
		return x
	}
	if x >= 1<<53 {
		return math.Log1p(x)
	}
	u := 1.0 + x
	iu := math.Float64bits(u)
	k := int((iu >> 52) - 1023) // >= 1: u >= 2
	iu &= 0x000fffffffffffff
	if iu < 0x0006a09e667f3bcd { // mantissa of Sqrt(2)
		u = math.Float64frombits(iu | 0x3ff0000000000000) // normalize u
	} else {
		k++
		u = math.Float64frombits(iu | 0x3fe0000000000000) // normalize u/2
		iu = (0x0010000000000000 - iu) >> 2
	}
	f := u - 1.0 // Sqrt(2)/2 < u < Sqrt(2)
	hfsq := 0.5 * f * f
	if iu == 0 { // u a power of 2: f is 0
		return float64(k)*Ln2Hi + float64(k)*Ln2Lo
	}
	s := f / (2.0 + f)
	z := s * s
	R := z * (Lp1 + z*(Lp2+z*(Lp3+z*(Lp4+z*(Lp5+z*(Lp6+z*Lp7))))))
	return float64(k)*Ln2Hi - ((hfsq - (s*(hfsq+R) + float64(k)*Ln2Lo)) - f)
}
