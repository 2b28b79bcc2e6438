package volume

import (
	"encoding/binary"
	"math"

	"github.com/iotwatch/iotwatch/detectors"
)

// Core is the volume model's core for one series of per-interval totals
// (requests, bytes, failures in each interval): a robust, daily-cycle-aware
// baseline of the series and the surprise of each new value against it, at two
// time scales. It is what `iotwatch eval nab` runs (inside a Series), and
// the per-event Detector runs the same code over each device's mean response
// size per closed 5-minute bucket, in log units (DetectorCoreParams: daily
// harmonic on, right tail only, absolute surprises), for slow drifts such as
// gradual exfiltration; the
// Detector's fast, open-bucket channels are Poisson-scored decayed counts (see
// volume.go), so a flood is flagged before its bucket closes.
//
// Model. Values are variance-stabilised first (y = sqrt(x) for x >= 0, the
// Anscombe transform under which a Poisson count has unit-ish variance, and an
// over-dispersed count a variance the model learns). The baseline of y is a
// level plus one daily harmonic (a·cos + b·sin of the time of day), learned by
// normalised least mean squares with time constant CoreParams.Long steps. The
// residual scale is an exponentially weighted mean absolute residual, floored
// by the Poisson floor 0.5 in the sqrt domain scaled by FloorScale.
//
// Scores, both in decades of tail probability (like detectors.PoissonSurprise):
//   - point: the value alone, against a Laplace tail on the scaled residual
//     (heavier than Gaussian: real series have heavy tails), both directions,
//     so a drop to silence is surprising too;
//   - drift: a short exponentially weighted mean of scaled residuals
//     (CoreParams.Short steps), against a Gaussian tail with its own standard
//     error, for level shifts and slow drifts no single value reveals.
//
// Calibration. A well-specified model's surprise averages 1/ln 10 decades; a
// series whose surprises average more (heavier tails than the model) has them
// scaled down by as much. Judging the surprises is the caller's business: the
// Detector thresholds them, Series calibrates them against the series' own
// tail and holds off after an alarm.
//
// Robustness. Learning uses residuals clipped to ±Clip scales (Huber), and a
// value whose surprise reached FlagSurprise teaches the baseline FlaggedWeight
// of a normal value: an attack does not become the baseline, yet a lasting
// change of level is learned eventually.
//
// The zero Core is a series with no history. Core is a value type with no
// pointers; MarshalBinary / UnmarshalBinary store it in CoreSize bytes.
type Core struct {
	n        uint32
	level    float64
	cos, sin float64
	dev      float64 // EW mean absolute residual
	drift    float64 // EW mean of scaled residuals
	driftDev float64 // EW mean absolute drift (its own scale: residuals are autocorrelated)
	mPoint   float64 // EW mean point surprise (calibration)
	mDrift   float64 // EW mean drift surprise (calibration)
}

// CoreParams are the core's parameters. One set serves every series.
type CoreParams struct {
	// Long is the baseline's time constant, in steps.
	Long float64
	// Short is the drift window's time constant, in steps.
	Short float64
	// Warm is the number of steps before any score.
	Warm uint32
	// Clip bounds a residual used for learning, in scales (Huber).
	Clip float64
	// FlagSurprise (decades) marks a value as flagged; FlaggedWeight is how much a
	// flagged value teaches, relative to a normal one.
	FlagSurprise  float64
	FlaggedWeight float64
	// CalCap bounds a surprise used for calibration, in decades.
	CalCap float64
	// FloorScale multiplies the Poisson floor of the residual scale.
	FloorScale float64
	// Daily enables the daily harmonic.
	Daily bool
	// Upward makes only values above the baseline surprising (right tail):
	// for a detector, a drop is another finding's business (silence).
	Upward bool
}

// DefaultCoreParams are the core's parameters under `iotwatch eval nab`
// (DefaultSeriesParams.Core) and the base of DetectorCoreParams.
//
// They were chosen on the NAB development subset (../shared/data/nab) by a
// handful of runs varying one parameter at a time, for all files at once: a
// week-long baseline (2000 steps of 5 minutes), an hour-long drift window
// (then with surprises judged against the largest of the last week, before
// Series calibrated them). The daily harmonic
// is off: on that subset it cost 3 points (its slow fit lags the tweet
// series' changing daily shape); it stays available for series with a
// steady cycle.
var DefaultCoreParams = CoreParams{
	Long:          2000,
	Short:         defaultShort,
	Warm:          48,
	Clip:          3,
	FlagSurprise:  4,
	FlaggedWeight: 0.05,
	FloorScale:    1,
	CalCap:        10,
	Daily:         false,
}

// DetectorCoreParams are the parameters the per-event Detector uses for its
// bytes-out drift channel, one step per closed 5-minute bucket with traffic:
// the same week-long baseline and hour-long drift window as DefaultCoreParams,
// with the daily harmonic (a device's day is steadier than a tweet stream's),
// and the right tail only.
var DetectorCoreParams = func() CoreParams {
	p := DefaultCoreParams
	p.Daily, p.Upward = true, true
	return p
}()

// CoreSize is the size of a marshalled Core. Its words 6 and 9 (bytes 28:32
// and 40:44) are unused: they held the scoring state of an earlier Core, and
// keeping their place keeps records written then readable.
const CoreSize = 44

// Step feeds the value of the interval ending at t (Unix ns; steps must come
// in order) and returns its calibrated point and drift surprises in decades
// (both 0 before p.Warm steps) and the value the baseline expected. A
// non-finite value is treated as 0.
func (c *Core) Step(p *CoreParams, t int64, x float64) (point, drift, expected float64) {
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
	point, drift, pred, _ := c.step(p, t, math.Sqrt(x), 0, false)
	return point, drift, pred * pred
}

// StepScore is Step for the Detector, in the core's own units: y is the
// square root of the value (finite, in [0, √maxCount]), and it returns the
// square root of the value expected. For such a y, Step(y*y) takes the
// square root of y*y, which is y again (correctly rounded, a square's root
// is exact: TestSqrtOfSquare), and its expected is pred*pred, whose root is
// pred: two square roots the Detector would take for nothing.
//
// The Detector keeps the core only as its record (MarshalBinary after the
// step) and uses the drift surprise only as detectors.SurpriseScore(drift,
// zMin) (0 below zMin): StepScore returns that score in place of the drift,
// and leaves the record exactly as Step does. Where neither can depend on
// the drift surprise's last digits (a drift in the Gaussian tail, see
// gaussTail), the surprise is bounded instead of computed; every other step
// computes it as Step does.
func (c *Core) StepScore(p *CoreParams, t int64, y, zMin float64) (point float64, score float32, pred float64) {
	point, _, pred, score = c.step(p, t, y, zMin, true)
	return point, score, pred
}

// step is Step of y*y, returning the square root of its expected value,
// and with scored StepScore's score of the drift against zMin.
func (c *Core) step(p *CoreParams, t int64, y, zMin float64, scored bool) (point, drift, pred float64, score float32) {
	cs, sn := 0.0, 0.0
	if p.Daily {
		sn, cs = dayPhase(t)
	}
	if c.n == 0 {
		c.level = y
		c.dev = 0
	}
	pred = c.level + c.cos*cs + c.sin*sn
	if pred < 0 {
		pred = 0
	}
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
	// calm/max(m, calm) is calm/calm, 1, for m <= calm: no division.
	cp, cd := 1.0, 1.0
	if c.n >= p.Warm {
		if c.mPoint > calm {
			cp = calm / c.mPoint
		}
		if c.mDrift > calm {
			cd = calm / c.mDrift
		}
	}
	point = sPoint * cp
	ec := 1 / min(float64(c.n+1), p.Long)
	exact := true
	if !(p.Upward && zd < 0) {
		if scored && zd >= gaussTailMin && zd < gaussTailMax {
			// The surprise lies in [lo, hi] (gaussTail). The bounds serve
			// when everything the surprise feeds is the same for any value
			// in between (every rounding is monotone): its calibration
			// term as the record keeps it (float32), whether the value is
			// flagged, and the score.
			lo, hi := gaussTail(zd)
			mLo, mHi := c.mDrift+ec*(min(lo, p.CalCap)-c.mDrift), c.mDrift+ec*(min(hi, p.CalCap)-c.mDrift)
			dLo, dHi := lo*cd, hi*cd
			warm := c.n >= p.Warm
			s, sure := scoreBetween(dLo, dHi, zMin)
			if !warm {
				s, sure = 0, true // no score while warming (below)
			}
			sure = sure && float32(mLo) == float32(mHi) &&
				(!warm || point >= p.FlagSurprise || dLo >= p.FlagSurprise || dHi < p.FlagSurprise)
			if sure {
				sDrift, score, exact = lo, s, false
			}
		}
		if exact {
			sDrift = gaussSurprise(zd)
		}
	}
	drift = sDrift * cd
	c.mPoint += ec * (min(sPoint, p.CalCap) - c.mPoint)
	c.mDrift += ec * (min(sDrift, p.CalCap) - c.mDrift)

	// Learn, robustly.
	w := 1.0
	if c.n >= p.Warm && max(point, drift) >= p.FlagSurprise {
		w = p.FlaggedWeight
	}
	eta := ec // w/min(n+1, Long) is ec's 1/min(n+1, Long) when w is 1
	if w != 1 {
		eta = w / min(float64(c.n+1), p.Long)
	}
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
	if scored && exact {
		score = detectors.SurpriseScore(drift, zMin)
	}
	return point, drift, pred, score
}

const dayNs = int64(86400e9)

// driftWeight returns the drift's weight per step, a = 1/short, and the iid
// standard error of its mean of unit residuals, sqrt(a/(2-a)). The default
// window's (every parameter set in use) are computed once, by the same
// expressions: two divisions and a square root were on the path of every
// step's drift surprise.
func driftWeight(short float64) (a, iid float64) {
	if short == defaultShort {
		return defaultDrift[0], defaultDrift[1]
	}
	return driftWeightOf(short)
}

func driftWeightOf(short float64) (a, iid float64) {
	a = 1 / short
	return a, math.Sqrt(a / (2 - a))
}

// defaultShort is DefaultCoreParams.Short; defaultDrift its driftWeight.
const defaultShort = 12

var defaultDrift = func() [2]float64 {
	a, iid := driftWeightOf(defaultShort)
	return [2]float64{a, iid}
}()

// dayPhase returns the sine and cosine of t's time of day as an angle (a
// day is 2π). A time on a BucketNs boundary (where the Detector's buckets
// close) reads them from a table computed by the same expression.
func dayPhase(t int64) (sn, cs float64) {
	tod := ((t % dayNs) + dayNs) % dayNs
	if tod%BucketNs == 0 {
		p := &dayPhases[tod/BucketNs]
		return p[0], p[1]
	}
	return dayPhaseOf(tod)
}

// dayPhaseOf is dayPhase of a time of day tod in [0, dayNs).
func dayPhaseOf(tod int64) (sn, cs float64) {
	return math.Sincos(2 * math.Pi * float64(tod) / float64(dayNs))
}

// dayPhases holds dayPhaseOf of every BucketNs boundary of a day.
var dayPhases = func() (d [dayNs / BucketNs][2]float64) {
	for i := range d {
		d[i][0], d[i][1] = dayPhaseOf(int64(i) * BucketNs)
	}
	return d
}()

func clip(v, lim float64) float64 {
	if v > lim {
		return lim
	}
	if v < -lim {
		return -lim
	}
	return v
}

// laplaceSurprise is -log10 of the two-sided tail of a Laplace variable with
// unit mean absolute deviation scaled like a Gaussian: P(|Z| >= |z|) = exp(-|z|·√2).
func laplaceSurprise(z float64) float64 {
	return math.Abs(z) * math.Sqrt2 / math.Ln10
}

// gaussSurprise is -log10 of the two-sided Gaussian tail at z.
func gaussSurprise(z float64) float64 {
	z = math.Abs(z)
	if z < 1e-9 {
		return 0
	}
	p := math.Erfc(z / math.Sqrt2)
	if p > 1e-300 {
		return -math.Log10(p)
	}
	// Asymptotic: P ≈ φ(z)/z·2.
	return (z*z/2 + math.Log(z*math.Sqrt(math.Pi/2))) / math.Ln10
}

// gaussTail bounds gaussSurprise(z) for z in [gaussTailMin, gaussTailMax):
// lo <= gaussSurprise(z) <= hi, with hi-lo about 1e-14 of the value.
//
// There gaussSurprise takes math.Erfc(x), x = z/√2, which for x in
// [1/0.35, 28) is exp(a)·exp(b)/x (a = -w²-0.5625 with w x's leading 20
// bits, b = (w-x)(w+x)+R/S, R/S a rational function of 1/x²: math/erf.go),
// then -log10 of it: two Exps and a Log. Its logarithm is a + b - ln x,
// with ln x from lnTail. The two differ by the rounding of each: Exp and
// Log within an ulp, a product and a quotient half an ulp each (about
// 1e-15 of ln erfc), the sums a few ulps of a + b (at most 1e-15 of
// |ln erfc| each), R/S evaluated in another order a few ulps of
// |R/S| < 0.1, x rounded differently an ulp (2x·ulp(x) in ln erfc), lnTail
// 2e-15 of ln x; the bound allows 1e-14 + 4e-15·|ln erfc|, several times
// that.
// TestGaussTail checks it on a dense grid.
func gaussTail(z float64) (lo, hi float64) {
	x := z * (1 / math.Sqrt2) // within an ulp of gaussSurprise's z/√2
	// math/erf.go's R(s)/S(s), s = 1/x², with its rb* and sb* (its erfc on
	// [1/0.35, 28)), as polynomials in t = x² multiplied by t⁷ (one
	// division), evaluated in pairs of terms (a shorter chain than Horner's).
	t := x * x
	t2 := t * t
	t4 := t2 * t2
	R := t * ((-4.83519191608651397019e+02 + t*-1.02509513161107724954e+03) +
		t2*(-6.37566443368389627722e+02+t*-1.60636384855821916062e+02) +
		t4*((-1.77579549177547519889e+01+t*-7.99283237680523006574e-01)+t2*-9.86494292470009928597e-03))
	S := (-2.24409524465858183362e+01 + t*4.74528541206955367215e+02) +
		t2*(2.55305040643316442583e+03+t*3.19985821950859553908e+03) +
		t4*((1.53672958608443695994e+03+t*3.25792512996573918826e+02)+t2*(3.03380607434824582924e+01+t))
	w := math.Float64frombits(math.Float64bits(x) & 0xffffffff00000000)
	l := (-w*w - 0.5625) + ((w-x)*(w+x) + R/S) - lnTail(x) // ln erfc(x) < 0
	e := 1e-14 - 4e-15*l
	return (-l - e) * (1 / math.Ln10), (-l + e) * (1 / math.Ln10)
}

// gaussTail's range: x = z/√2 from 3 (above math.Erfc's 1/0.35; z = 4.24,
// 4.7 decades, below the Detector's threshold of 6) to 25 (erfc(25) ≈
// 1e-273, so gaussSurprise takes its Erfc, not its asymptote below 1e-300).
const (
	gaussTailMin = 3 * math.Sqrt2
	gaussTailMax = 25 * math.Sqrt2
)

// scoreBetween returns detectors.SurpriseScore(z, zMin) for every z in
// [lo, hi], and false when that is not one value.
func scoreBetween(lo, hi, zMin float64) (float32, bool) {
	switch {
	case hi < zMin:
		return 0, true
	case lo < zMin:
		return 0, false
	case lo-zMin > 100:
		return 1, true
	case hi-zMin > 100:
		return 0, false
	}
	// SurpriseScore is float32(1 - 0.5·2^(-(z-zMin)/4)), whose slope is at
	// most ln 2/8 < 0.0867. At the middle z of [lo, hi], u = 64·(-(z-zMin)/4)
	// (in [-1600, 0]) is rounded once (an ulp of 2048, 5e-15 of 2^(u/64)),
	// halfPow2 is within 1e-14 of 0.5·2^(u/64) and the subtraction adds an
	// ulp: v is within 1e-14 of SurpriseScore's value before its rounding
	// to float32, and m bounds that and the slope across the interval.
	v := 1 - halfPow2(16*zMin-8*(lo+hi))
	m := 0.0867*(hi-lo)/2 + 1e-13
	s := float32(v - m)
	return s, s == float32(v+m)
}

// halfPow2 returns 2^(u/64)/2 for u in [-1664, 0] (2^t/2, t = u/64 in
// [-26, 0]), within 1e-14 of it (relative): 2^(k/64) from a table for k
// the integer nearest u (an addition rounds it, where a conversion to an
// integer and back took twice as long), times a degree-5 Taylor
// polynomial of e^g, g = (u-k)·ln 2/64 in [-ln 2/128, ln 2/128] (its
// remainder below g^6/6! < 1e-16), times 2^(k÷64)/2 (an exponent), where
// math.Exp2 takes several times as long. TestHalfPow2 checks it against
// math.Exp2.
func halfPow2(u float64) float64 {
	const shift = 0x1.8p52 // u+shift is u rounded to an integer, which the sum's low bits hold
	kb := u + shift
	k := int64(math.Float64bits(kb) - math.Float64bits(shift))
	g := (u - (kb - shift)) * (math.Ln2 / 64) // u - k is exact
	g2 := g * g
	p := (1 + g) + g2*(1.0/2+g*(1.0/6)) + g2*g2*(1.0/24+g*(1.0/120))
	return pow2Sixtyfourths[k&63] * math.Float64frombits(uint64(1022+k>>6)<<52) * p
}

// pow2Sixtyfourths holds 2^(j/64), j = 0..63.
var pow2Sixtyfourths = func() (t [64]float64) {
	for j := range t {
		t[j] = math.Exp2(float64(j) / 64)
	}
	return t
}()

// surpriseToScore maps decades to [0,1), monotonically and without
// saturating: z/(z+10), so 0.5 at 10 decades (a 1e-10 tail probability).
func surpriseToScore(z float64) float32 {
	if !(z > 0) {
		return 0
	}
	return float32(z / (z + 10))
}

// MarshalBinary appends the core's state in CoreSize bytes to dst (the
// unused words are 0).
func (c *Core) MarshalBinary(dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, c.n)
	for _, v := range [...]float64{c.level, c.cos, c.sin, c.dev, c.drift, c.driftDev, 0, c.mPoint, c.mDrift, 0} {
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(float32(v)))
	}
	return dst
}

// UnmarshalBinary reads a core from b; a short b, or non-finite values, read
// as no history.
func (c *Core) UnmarshalBinary(b []byte) {
	if len(b) < CoreSize {
		*c = Core{}
		return
	}
	b = b[:CoreSize]
	word := func(i int) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4+4*i:]))) }
	c.n = binary.LittleEndian.Uint32(b)
	c.level, c.cos, c.sin, c.dev, c.drift, c.driftDev = word(0), word(1), word(2), word(3), word(4), word(5)
	c.mPoint, c.mDrift = word(7), word(8) // words 6 and 9 are unused
	// NaN, infinities and values beyond maxCount all fail the comparison.
	if !(math.Abs(c.level) <= maxCount && math.Abs(c.cos) <= maxCount && math.Abs(c.sin) <= maxCount &&
		math.Abs(c.dev) <= maxCount && math.Abs(c.drift) <= maxCount && math.Abs(c.driftDev) <= maxCount &&
		math.Abs(c.mPoint) <= maxCount && math.Abs(c.mDrift) <= maxCount) {
		*c = Core{}
	}
}

// lnTail returns ln x for x in [2, 32) (gaussTail's x, in [3, 25)), within
// 2e-15 of it (absolute; TestLnTail), for gaussTail's bound, which allows
// 1e-14 and more: x = 2^k·m, m in [1, 2), and m·c, c the inverse of the
// middle of m's 64th of [1, 2), is 1+r with |r| < 1/128: ln x = k·ln 2 -
// ln c + ln(1+r), ln c from a table and ln(1+r) a degree-6 Taylor
// polynomial (its remainder below r^7/7 < 2e-16). math.Log, of any
// float64, takes a division and several times as long.
func lnTail(x float64) float64 {
	bits := math.Float64bits(x)
	k := float64(int64(bits>>52) - 1023)
	e := &lnTailTable[bits>>(52-6)&63]
	r := math.Float64frombits(bits&(1<<52-1)|1023<<52)*e[0] - 1
	r2 := r * r
	p := r2*(-1.0/2+r*(1.0/3)) + r2*r2*((-1.0/4+r*(1.0/5))+r2*(-1.0/6))
	return (k*math.Ln2 + e[1]) + (r + p)
}

// lnTailTable holds, for each 64th j of [1, 2), c = 1/(1 + (j+1/2)/64) and
// -ln c.
var lnTailTable = func() (t [64][2]float64) {
	for j := range t {
		c := 1 / (1 + (float64(j)+0.5)/64)
		t[j] = [2]float64{c, -math.Log(c)}
	}
	return t
}()
