package volume

import "math"

// Series is the volume model's core dressed for benchmarks that score one
// anomaly score per interval of a series with one threshold over many series
// (`iotwatch eval nab`). It adds four things to Core, none of which the
// per-event Detector needs (it has its own thresholds and alert logic), so
// they live here and not in Core's marshalled state:
//
//   - A distribution-change channel: the relative entropy (KL divergence) of
//     the recent distribution of the values' magnitudes (log2 bins, so it
//     works on any positive series; a window of SeriesParams.EntWindow steps)
//     from their long-run distribution (Core's Long). It sees what neither
//     of the core's channels does: values appearing in a range the series
//     seldom visits, such as a new background level between bursts of an
//     on/off series. (It is one-sided: values leaving a range, such as bursts
//     that stop, move it little; the symmetric divergence scored lower.)
//   - A shape-novelty channel at two time scales (novelty): the distance from
//     the recent stretch of the series to the nearest stretch of its own
//     kept past (a left matrix profile over a downsampled series, as in
//     discord discovery). A stretch that recurs, such as the burst of a daily
//     job on an on/off series, has a near neighbour a day back and is not
//     novel however large it is; a stretch unlike any in the history is.
//   - Tail calibration. The core's surprise (the larger of its point and drift
//     surprises, in decades), the divergence and each novelty are judged
//     against this series' own history of them: a decayed histogram, read
//     empirically in its body and, above its upper SeriesParams.TailMass,
//     through an exponential tail fitted to the excesses (peaks over
//     threshold, as in SPOT, Siffer et al. 2017). The result, in decades of
//     per-step exceedance probability, means the same on every series: 3 is
//     "seen about once every thousand intervals here". The calibrated
//     surprise is the larger of the core's and the divergence's (less log10 2:
//     two chances to be surprising), capped at the novelty plus
//     SeriesParams.NovSlack (a large value in a familiar shape is not an
//     anomaly), or the novelty itself (less log10 1.5) when that is larger.
//   - Hold-off. A calibrated surprise reaching the alarm level is reported
//     once; for the next SeriesParams.Hold steps every score is reported below
//     the alarm level (one alert per episode, and the first, earliest one
//     carries it). After an alarm the level is raised to that alarm's
//     surprise and decays back to SeriesParams.Alarm with time constant
//     SeriesParams.Refractory steps: the next alarm soon after must be more
//     surprising than the last. During a hold-off, a surprise SeriesParams.Escalate
//     decades above the alarm that started it raises an alarm of its own and
//     starts a new hold-off: a small alarm just before a large event (a
//     precursor, or noise) must not hide it. Scores below the alarm are halved, so that a
//     threshold over the scores either sits above the alarm level, where the
//     hold-off is in force, or well below it.
//   - Level shifts (rebase). The core learns a flagged value at a twentieth
//     of a normal one, so that an attack does not become the baseline; a
//     lasting shift of level would leave it blind for good. After
//     SeriesParams.Rebase consecutive steps of flagged drift in one direction,
//     the shift is adopted: the core's level jumps to the recent level. Once
//     the adopted level has held for SeriesParams.RebaseConfirm steps (no new
//     run of flagged drift), the core's surprise history forgets the
//     surprises it learned during the shift's run: they measured the model's
//     lag, not the series' tail, and left in, they stretch the tail so far
//     that a second anomaly after the shift is judged ordinary.
//   - Daily recurrence (recurrence). No alarm is raised at a time of day
//     within SeriesParams.Recur 5-minute slots of which the series was as
//     surprising (calibrated, at the alarm level) on at least two of the
//     three previous days: a nightly job's burst on an on/off series is the
//     series' habit, not an anomaly, however its shape varies.
//
// The zero Series is a series with no history. Step does not allocate; a
// Series holds about 36 KB (the novelty channels' history, the recurrence
// table, the record of a shift's run).
type Series struct {
	core        Core
	hist        tail             // history of the core's surprise
	entHist     tail             // history of the divergence
	recent, all [entBins]float64 // distributions of log2(1+|x|): recent, long-run
	hold        uint32           // steps left in the hold-off
	quantum     float64          // the series' resolution: least change seen, at most 1 (0: none yet)
	last        float64          // previous value
	core1       CoreParams       // p.Core with the floor scaled to the quantum
	nov         [2]novelty       // shape novelty: short and long blocks
	novHist     [2]tail          // histories of the novelties
	novLast     [2]float64       // calibrated novelty of the latest pattern of each scale
	lastAlarm   float64          // calibrated surprise of the last alarm
	daily       recurrence       // which times of day were surprising on recent days
	since       uint32           // steps since the last alarm
	alarms      float64          // decayed count of alarms raised (time constant AlarmMemory)
	holdLevel   float64          // judged surprise of the alarm that started the hold-off
	shiftRun    uint32           // consecutive steps the core's drift has been flagged, one way
	shiftUp     bool             // that way
	recentY     float64          // EW mean of sqrt(|x|) over Core.Short steps
	shift       shiftRecord      // what hist learned during the current shift's run
}

// entBins is the number of log2 bins of the divergence channel: 2^31 and more
// share the last one.
const entBins = 32

// tail is a decayed histogram of a surprise, in bins of seriesBinWidth decades.
type tail struct {
	hist [seriesBins]float64
	mass float64 // total of hist
	w    float64 // weight of the next sample (grows instead of decaying hist)
	n    uint32  // samples in hist
	top  int     // highest bin ever filled: the scans start there
}

// SeriesParams are the parameters of a Series. One set serves every series.
type SeriesParams struct {
	// Core are the core's parameters.
	Core CoreParams
	// Memory is the time constant, in steps, of the surprise histogram.
	Memory float64
	// TailMass is the fraction of the histogram's mass above the tail's threshold.
	TailMass float64
	// MinHistory is the number of surprises before calibration; until then the
	// raw surprise is reported.
	MinHistory uint32
	// EntWindow is the window, in steps, of the recent distribution of the
	// divergence channel (0: channel off).
	EntWindow float64
	// Quantum scales the core's Poisson floor to the series' resolution (the
	// least change between consecutive values seen, at most 1): a count's
	// floor stays, a continuous series' (a CPU share, a price) is the noise
	// its resolution allows, not the noise of a count.
	Quantum bool
	// Alarm (calibrated decades) starts a hold-off of Hold steps.
	Alarm float64
	Hold  uint32
	// Refractory is the time constant, in steps, with which the alarm level,
	// raised to the last alarm's surprise, decays back to Alarm (0: not raised).
	Refractory float64
	// Recur (steps of recurrenceSlot, each side) enables the daily
	// recurrence check: an alarm is not raised at a time of day within Recur
	// slots of which the series was as surprising on each of the two
	// previous days (0: off).
	Recur int
	// NovBlock and NovLongBlock are the steps per block of the two novelty
	// channels (NovBlock 0: both off; NovLongBlock 0: the long one off), NovLen
	// the blocks per pattern, NovHistory the blocks of history searched (at
	// most novRing).
	NovBlock, NovLongBlock, NovLen, NovHistory uint32
	// NovSlack (decades) is how much more surprising than its novelty a value
	// may be judged by the core and divergence channels.
	NovSlack float64
	// AlarmMemory (steps) is the time constant of the series' decayed count
	// of alarms, n; an alarm is judged at its calibrated surprise less
	// log10(1+n) (0: off).
	AlarmMemory float64
	// Escalate (decades): during a hold-off, a surprise this much above the
	// alarm that started it raises an alarm of its own (0: off).
	Escalate float64
	// Rebase (steps): when the core's drift has been flagged in one
	// direction for this many consecutive steps, the shift of level is
	// adopted (0: off). See Series.rebase.
	Rebase uint32
	// RebaseForget: once an adopted shift has held for RebaseConfirm steps
	// (no new run of flagged drift: a burst that ends is not a shift), the
	// core's surprise history forgets the surprises it learned during the
	// shift's run. See Series.trackShift.
	RebaseForget  bool
	RebaseConfirm uint32
}

// DefaultSeriesParams are the parameters `iotwatch eval nab` uses for every
// file: the core's DefaultCoreParams with its floor scaled to the series'
// resolution, a histogram of about two weeks of 5-minute steps with a tail
// fitted to its top 2%, a divergence window of 100 steps, novelty patterns of
// 4 blocks of 3 and of 12 steps searched over the last 1024 blocks, the core
// and divergence judged at most 1.5 decades above the novelty, an alarm at a
// per-step exceedance of 10^-2 with a hold-off of 72 steps (6 hours of
// 5-minute steps), a raised level decaying over 72 steps, and the daily
// recurrence check over half an hour each side (set before measuring; 15
// minutes or an hour each side scored within a point of it). Escalation by 2
// decades (1, 1.5, 2.5 and 3 scored within a point of it) is always on. A
// level shift is adopted after 36 steps of flagged drift (three of the
// drift's time constants; of 12, 18, 24, 36, 48 and 72 steps, 36 scored best
// in sample and 12 and 72 lost 2-3 points: bench/RESULTS.md has the left-out
// figures, with the step count also chosen by the cross-validation). Its run's
// surprises are forgotten once the adopted level has held for 72 steps (the
// hold-off; 24 to 288 steps scored within 0.2 of it, forgetting at adoption
// 0.5 less). The alarm,
// hold-off, refractory time and slack are the in-sample choice of
// `iotwatch eval nab --cv` over the 48 NAB development series (eval.NABGrid);
// the others were set by a handful of runs on the same series, the first
// ones on its ten count series (bench/nab/LOG.md): expect less on series
// never seen.
var DefaultSeriesParams = SeriesParams{
	Core:          DefaultCoreParams,
	Memory:        4000,
	TailMass:      0.02,
	MinHistory:    200,
	EntWindow:     100,
	Quantum:       true,
	Alarm:         2,
	Hold:          72,
	Refractory:    72,
	NovBlock:      3,
	NovLongBlock:  12,
	NovLen:        4,
	NovHistory:    novRing,
	NovSlack:      1.5,
	Recur:         6,
	Escalate:      2,
	Rebase:        36,
	RebaseForget:  true,
	RebaseConfirm: 72,
}

const (
	seriesBins     = 160
	seriesBinWidth = 0.25 // decades
)

// Step feeds the value of the interval ending at t (Unix ns, in order) and
// returns its score in [0,1] and its calibrated surprise in decades (before
// the hold-off).
func (s *Series) Step(p *SeriesParams, t int64, x float64) (score float32, calibrated float64) {
	cp := &p.Core
	if p.Quantum {
		if d := math.Abs(x - s.last); d > 0 && (s.quantum == 0 || d < s.quantum) && s.core.n > 0 {
			s.quantum = min(d, 1)
		}
		s.last = x
		s.core1 = p.Core
		if s.quantum > 0 {
			s.core1.FloorScale *= math.Sqrt(s.quantum)
		}
		cp = &s.core1
	}
	point, drift, _ := s.core.Step(cp, t, x)
	adopted := false
	if p.Rebase > 0 {
		adopted = s.rebase(p.Rebase, cp, x, drift)
	}
	if s.core.n <= p.Core.Warm {
		return 0, 0
	}
	forget := p.Rebase > 0 && p.RebaseForget
	w := max(s.hist.w, 1) // the weight learn gives the next value: 1 on its first
	v := max(point, drift)
	calibrated = s.hist.calibrate(p, v)
	if forget {
		s.shift.track(&s.hist, p.Memory, v, w, s.shiftRun, adopted, p.RebaseConfirm)
	}
	if p.EntWindow > 0 {
		// In decinats, so that the histogram's bins resolve it.
		d := s.entHist.calibrate(p, 10*s.divergence(p.EntWindow, min(float64(s.core.n), p.Core.Long), x))
		calibrated = max(calibrated, d) - math.Log10(2)
	}
	if p.NovBlock > 0 {
		calibrated = s.novelty(p, cp, x, calibrated)
	}
	recurs := false
	if p.Recur > 0 {
		recurs = s.daily.seen(t, p.Recur)
		if calibrated >= p.Alarm {
			s.daily.mark(t)
		}
	}
	judged := calibrated
	if p.AlarmMemory > 0 {
		s.alarms *= 1 - 1/max(p.AlarmMemory, 1)
		judged -= math.Log10(1 + s.alarms)
	}
	rep := judged
	bar := p.Alarm
	if p.Refractory > 0 && s.lastAlarm > p.Alarm {
		bar += (s.lastAlarm - p.Alarm) * math.Exp(-float64(s.since)/p.Refractory)
	}
	if s.since < math.MaxUint32 {
		s.since++
	}
	escalates := p.Escalate > 0 && s.hold > 0 && judged >= s.holdLevel+p.Escalate
	switch {
	case judged >= bar && (s.hold == 0 || escalates) && !recurs:
		s.hold = p.Hold
		s.lastAlarm, s.since, s.holdLevel = judged, 0, judged
		s.alarms++
	default:
		rep = min(judged, p.Alarm) / 2
		if s.hold > 0 {
			s.hold--
		}
	}
	return surpriseToScore(rep), calibrated
}

// rebase adopts a lasting shift of level. The core learns a flagged value at
// FlaggedWeight of a normal one (an attack must not become the baseline), so
// after a level shift (a server's CPU moving from 6% to 14% for good) its
// baseline stays at the old level for longer than any series lasts: the drift
// stays saturated, the core's own calibration learns that every value is
// surprising and scales all surprises down, and the core is blind from then
// on (NAB's rds_cpu_utilization_cc0c53). When the drift has been flagged in
// one direction for steps consecutive steps, the core's level jumps to the
// recent level (an EW mean over Core.Short steps), its drift restarts at 0
// and its calibration is brought back to a well-specified model's, as if the
// episode had not taught it that everything is surprising. The episode itself
// has been judged (and alarmed on) before that.
func (s *Series) rebase(steps uint32, cp *CoreParams, x, drift float64) (adopted bool) {
	y := math.Sqrt(min(math.Abs(x), maxCount))
	if y != y {
		y = 0 // NaN, as Core reads it
	}
	if s.core.n <= 1 {
		s.recentY = y
	}
	s.recentY += (y - s.recentY) / max(cp.Short, 1)
	up := s.core.drift > 0
	switch {
	case s.core.n <= cp.Warm || drift < cp.FlagSurprise:
		s.shiftRun = 0
	case s.shiftRun == 0 || up != s.shiftUp:
		s.shiftRun, s.shiftUp = 1, up
	default:
		s.shiftRun++
	}
	if s.shiftRun >= steps {
		const calm = 1 / math.Ln10 // see Core.Step
		s.core.level, s.core.drift = s.recentY, 0
		s.core.mPoint, s.core.mDrift = min(s.core.mPoint, calm), min(s.core.mDrift, calm)
		s.shiftRun = 0
		return true
	}
	return false
}

// novelty feeds x to the novelty channels and returns c (the calibrated
// surprise of the other channels) judged against the calibrated novelty:
// capped at the novelty plus p.NovSlack, raised to the novelty (less log10
// 1.5) where that is larger. Each channel's novelty is computed when its block
// closes and holds until the next one does, so a spike in a novel shape is
// judged when its block closes, up to NovBlock-1 steps after it. (Judging the
// stretch that ends with the open block at every step, a partial block
// against whole ones, cost 5 NAB points in false alarms.)
func (s *Series) novelty(p *SeriesParams, cp *CoreParams, x, c float64) float64 {
	y := math.Sqrt(min(math.Abs(x), maxCount))
	if y != y {
		y = 0 // NaN, as Core reads it
	}
	scale := max(1.2533*s.core.dev, 0.5*cp.FloorScale, 1e-9) // as Core.Step
	blocks := [2]uint32{p.NovBlock, p.NovLongBlock}
	bonferroni := 0.0
	if p.NovLongBlock > 0 {
		bonferroni = math.Log10(2) // two chances to be novel
	}
	nl := 0.0
	for k, block := range blocks {
		if block == 0 {
			continue
		}
		if s.nov[k].add(block, y) {
			if d, ok := s.nov[k].distance(p.NovLen, p.NovHistory, scale); ok {
				// Doubled, so that the histogram's bins resolve it.
				s.novLast[k] = s.novHist[k].calibrate(p, 2*d)
			}
		}
		nl = max(nl, s.novLast[k]-bonferroni)
	}
	return max(nl-math.Log10(1.5), min(c, nl+p.NovSlack))
}

// divergence adds x to the recent (time constant window steps) and long-run
// (long steps) distributions of its magnitude's log2 bin and returns the
// relative entropy of the recent one from the long-run one, in nats.
// Long-run shares are floored at 1e-3, so that a first visit to a bin counts
// as rare, not as impossible.
func (s *Series) divergence(window, long, x float64) float64 {
	m := math.Abs(x)
	if m != m {
		m = 0 // NaN, as Core reads it
	}
	b := entBins - 1
	if m < 1<<(entBins-1) {
		b = int(math.Log2(1 + m))
	}
	a, la := 1/max(window, 1), 1/max(long, 1)
	kl := 0.0
	for i := range s.recent {
		in := 0.0
		if i == b {
			in = 1
		}
		s.recent[i] += a * (in - s.recent[i])
		if r := s.recent[i]; r > 1e-12 {
			kl += r * math.Log(r/max(s.all[i], 1e-3))
		}
		s.all[i] += la * (in - s.all[i])
	}
	return max(kl, 0)
}

// calibrate returns the calibrated surprise of v (v itself until the
// history holds MinHistory values) and then learns v.
func (h *tail) calibrate(p *SeriesParams, v float64) float64 {
	c := v
	if h.n >= max(p.MinHistory, 1) {
		c = h.exceedance(p.TailMass, v)
	}
	h.learn(p.Memory, v)
	return c
}

// exceedance returns -log10 of the probability, under the histogram, of a
// surprise at least v.
func (h *tail) exceedance(tailMass, v float64) float64 {
	// The tail's threshold: the lowest bin edge with at most tailMass above.
	target := tailMass * h.mass
	above, k := 0.0, h.top+1
	for k > 0 && above+h.hist[k-1] <= target {
		k--
		above += h.hist[k]
	}
	if above == 0 && k > 0 { // the highest non-empty bin alone holds more: use it
		k--
		above += h.hist[k]
	}
	u := float64(k) * seriesBinWidth
	if v >= u {
		// Exponential tail: mean excess over u.
		ex := 0.0
		for i := k; i <= h.top; i++ {
			ex += h.hist[i] * ((float64(i)+0.5)*seriesBinWidth - u)
		}
		beta := max(ex/max(above, 1e-300), seriesBinWidth)
		return -math.Log10(max(above, 1e-300)/h.mass) + (v-u)/beta/math.Ln10
	}
	// Body: the empirical mass above v, linear within v's bin.
	b := int(max(v, 0) / seriesBinWidth)
	m := above
	for i := k - 1; i > b; i-- {
		m += h.hist[i]
	}
	m += h.hist[b] * (float64(b+1) - max(v, 0)/seriesBinWidth)
	return -math.Log10(max(m, 1e-300) / h.mass)
}

// learn adds v to the histogram, whose older mass decays with time constant
// memory steps.
func (h *tail) learn(memory, v float64) {
	if h.w == 0 {
		h.w = 1
	}
	b := min(int(max(v, 0)/seriesBinWidth), seriesBins-1)
	h.hist[b] += h.w
	h.top = max(h.top, b)
	h.mass += h.w
	h.w /= 1 - 1/max(memory, 2)
	if h.w > 1e100 { // rescale instead of overflowing
		for i := range h.hist {
			h.hist[i] /= h.w
		}
		h.mass /= h.w
		h.w = 1
	}
	if h.n < math.MaxUint32 {
		h.n++
	}
}

// shiftRecord is what a surprise history learned during the current run of
// flagged drift (a shift under way): once the shift has been adopted and has
// held, the history forgets it. Fixed size.
type shiftRecord struct {
	hist    [seriesBins]float64 // weights learned, per bin
	mass    float64             // total of hist
	pending uint32              // steps since the shift was adopted, + 1 (0: not adopted)
}

// track is called after h learned surprise v at weight w (h's weight before
// learn grew it), with run the steps of the current run of flagged drift (0:
// none). While a run is under way it records what h learned; once the run's
// shift has been adopted (adopt) and has held for confirm steps with no new
// run, h forgets the record. A new run before then (the adopted level did
// not hold: a burst, not a shift) drops the record.
func (r *shiftRecord) track(h *tail, memory, v, w float64, run uint32, adopt bool, confirm uint32) {
	if h.w < w { // learn rescaled the histogram by the grown weight
		f := w / (1 - 1/max(memory, 2))
		w /= f
		if r.mass > 0 {
			for i := range r.hist {
				r.hist[i] /= f
			}
			r.mass /= f
		}
	}
	if adopt && r.mass > 0 {
		r.pending = 1
	}
	if r.pending > 0 {
		if run == 0 {
			if r.pending++; r.pending > confirm {
				for i := range r.hist {
					h.hist[i] = max(h.hist[i]-r.hist[i], 0)
				}
				h.mass = max(h.mass-r.mass, 0)
				*r = shiftRecord{}
			}
			return
		}
		*r = shiftRecord{}
	}
	if run == 0 {
		if r.mass > 0 {
			*r = shiftRecord{}
		}
		return
	}
	b := min(int(max(v, 0)/seriesBinWidth), seriesBins-1)
	r.hist[b] += w
	r.mass += w
}
