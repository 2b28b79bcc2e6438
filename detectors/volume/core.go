package volume

import (
	"encoding/binary"
	"math"
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
	if !(p.Upward && zd < 0) {
		sDrift = gaussSurprise(zd)
	}
	const calm = 1 / math.Ln10
	cp, cd := calm/max(c.mPoint, calm), calm/max(c.mDrift, calm)
	if c.n < p.Warm {
		cp, cd = 1, 1
	}
	point, drift = sPoint*cp, sDrift*cd
	ec := 1 / min(float64(c.n+1), p.Long)
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
