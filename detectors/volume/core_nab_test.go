package volume

import (
	"math"
	"math/rand/v2"
	"testing"
)

// poisson draws a Poisson count with mean lambda (Knuth; lambda is small here).
func poisson(r *rand.Rand, lambda float64) float64 {
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

const stepNs = int64(300e9) // 5-minute intervals

// TestCoreSeriesStationary: on a stationary Poisson series, alarms (scores at or
// above the alarm level) come at no more than about the calibrated rate
// (10^-Alarm per step, fewer with the hold-off), and a single 6x spike
// afterwards (out of any hold-off) raises an alarm, more surprising than every
// calm step.
func TestCoreSeriesStationary(t *testing.T) {
	p := DefaultSeriesParams
	r := rand.New(rand.NewPCG(1, 2))
	var s Series
	t0 := int64(1.4e18)
	const n = 20000
	alarm := surpriseToScore(p.Alarm)
	alarms, calm := 0, 0.0
	i := 0
	for ; i < n || s.hold > 0; i++ {
		sc, c := s.Step(&p, t0+int64(i)*stepNs, poisson(r, 20))
		if !(sc >= 0 && sc <= 1) || math.IsNaN(c) {
			t.Fatalf("step %d: score %g calibrated %g", i, sc, c)
		}
		if sc >= alarm {
			alarms++
		}
		calm = max(calm, c)
	}
	if limit := int(2 * n * math.Pow(10, -p.Alarm)); alarms > limit {
		t.Errorf("stationary Poisson: %d alarms in %d steps, want at most %d (2x the calibrated rate)", alarms, n, limit)
	}
	if sc, c := s.Step(&p, t0+int64(i)*stepNs, 120); !(sc >= alarm) || !(c > calm) {
		t.Errorf("a 6x spike scores %g (calibrated %.2f decades), want an alarm (%g) above every calm step (max %.2f)", sc, c, alarm, calm)
	}
}

// TestCoreSeriesLevelShiftHoldOff: a lasting tripling of a Poisson series (out
// of any hold-off) raises an alarm within a few steps, then, while its
// calibrated surprise stays high, the hold-off keeps every score below the
// alarm level until it ends.
func TestCoreSeriesLevelShiftHoldOff(t *testing.T) {
	p := DefaultSeriesParams
	r := rand.New(rand.NewPCG(3, 4))
	var s Series
	t0 := int64(1.4e18)
	i := 0
	step := func(lambda float64) (float32, float64) {
		i++
		return s.Step(&p, t0+int64(i)*stepNs, poisson(r, lambda))
	}
	for range 3000 {
		step(20)
	}
	for s.hold > 0 { // a calm alarm's hold-off: let it end
		step(20)
	}
	alarm := surpriseToScore(p.Alarm)
	first := -1
	for k := range 6 {
		if sc, _ := step(60); sc >= alarm {
			first = k
			break
		}
	}
	if first < 0 {
		t.Fatal("a tripling raised no alarm in its first 6 steps")
	}
	high := 0
	for k := first + 1; k < int(p.Hold)-1; k++ {
		sc, c := step(60)
		if sc >= alarm {
			t.Fatalf("step %d of the shift (alarm at %d): score %g, want held off below %g", k, first, sc, alarm)
		}
		if c >= p.Alarm {
			high++
		}
	}
	if high == 0 {
		t.Error("no step after the alarm had a calibrated surprise at the alarm level: the hold-off was not tested")
	}
}

// TestSeriesEscalation: during the hold-off of a small alarm, a far larger
// surprise raises an alarm of its own when SeriesParams.Escalate allows it
// (the first, small alarm must not hide the larger event just after it), and
// stays held off without it.
func TestSeriesEscalation(t *testing.T) {
	run := func(escalate float64) (alarms int) {
		p := DefaultSeriesParams
		p.Escalate = escalate
		r := rand.New(rand.NewPCG(5, 6))
		var s Series
		t0 := int64(1.4e18)
		i := 0
		step := func(x float64) float32 {
			i++
			sc, _ := s.Step(&p, t0+int64(i)*stepNs, x)
			return sc
		}
		for range 3000 {
			step(poisson(r, 20))
		}
		for s.hold > 0 {
			step(poisson(r, 20))
		}
		alarm := surpriseToScore(p.Alarm)
		// A small rise, enough for an alarm, then a 20x burst 10 steps later.
		for x := 36.0; alarms == 0 && x < 80; x += 4 {
			if step(x) >= alarm {
				alarms++
			}
		}
		if alarms == 0 {
			t.Fatal("a rise to 80 raised no alarm")
		}
		for range 10 {
			step(poisson(r, 20))
		}
		for range 6 { // novelty is judged when its block closes
			if step(400) >= alarm {
				alarms++
			}
		}
		return alarms
	}
	if n := run(DefaultSeriesParams.Escalate); n != 2 {
		t.Errorf("with escalation: %d alarms, want 2 (the burst escalates the hold-off)", n)
	}
	if n := run(0); n != 1 {
		t.Errorf("without escalation: %d alarms, want 1 (the burst is held off)", n)
	}
}

// TestCoreSeriesDivergence: the divergence channel stays near zero on a
// series alternating between two ranges; it rises within an hour, and past half
// a nat within six, when values arrive in a range the series has not visited;
// when one of its two ranges goes quiet for a day it rises only a little (the
// channel is one-sided).
func TestCoreSeriesDivergence(t *testing.T) {
	const window, long = 144, 2000
	var s Series
	d := 0.0
	for i := range 3000 {
		x := 10.0
		if i%2 == 0 {
			x = 1000
		}
		d = s.divergence(window, min(float64(i+1), long), x)
	}
	if !(d < 0.05) {
		t.Errorf("alternating series: divergence %.3f nats, want below 0.05", d)
	}
	quiet := s
	for k := range 72 {
		d = s.divergence(window, long, 1e5)
		if k == 11 && !(d > 0.1) {
			t.Errorf("an hour of values in a new range: divergence %.3f nats, want above 0.1", d)
		}
	}
	if !(d > 0.5) {
		t.Errorf("six hours of values in a new range: divergence %.3f nats, want above 0.5", d)
	}
	for range 288 {
		d = quiet.divergence(window, long, 10)
	}
	if !(d > 0.2 && d < 1) {
		t.Errorf("a day without the upper range: divergence %.3f nats, want between 0.2 and 1", d)
	}
}

// TestCoreSeriesAllocs: Step does not allocate.
func TestCoreSeriesAllocs(t *testing.T) {
	p := DefaultSeriesParams
	var s Series
	ts := int64(1.4e18)
	if a := testing.AllocsPerRun(1000, func() {
		ts += stepNs
		s.Step(&p, ts, float64(100+ts/stepNs%7))
	}); a != 0 {
		t.Errorf("Step allocates %g times, want 0", a)
	}
}

func BenchmarkCoreStepSeries(b *testing.B) {
	p := DefaultSeriesParams
	var s Series
	t := int64(1.4e18)
	b.ReportAllocs()
	for b.Loop() {
		t += stepNs
		s.Step(&p, t, float64(100+t/stepNs%7))
	}
}

// TestSeriesQuantum: a continuous series far below 1 (a CPU share, a price)
// cannot reach the Poisson floor of a count; with Quantum its floor is its
// own resolution, so a jump to twice its level is an alarm.
func TestSeriesQuantum(t *testing.T) {
	run := func(q bool) float64 {
		p := DefaultSeriesParams
		p.Quantum = q
		var s Series
		top := 0.0
		for i := range 3000 {
			x := 0.05 + 0.001*float64(i%5)
			if i >= 2500 && i < 2510 {
				x = 0.1
			}
			_, cal := s.Step(&p, int64(i)*300e9, x)
			if i >= 2500 && i < 2510 {
				top = max(top, cal)
			}
		}
		return top
	}
	off, on := run(false), run(true)
	if !(on >= DefaultSeriesParams.Alarm) || !(on > off) {
		t.Errorf("jump from 0.05 to 0.1: calibrated surprise %g with Quantum, %g without; want >= alarm %g and above", on, off, DefaultSeriesParams.Alarm)
	}
}
