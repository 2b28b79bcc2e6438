package volume

import (
	"math/rand/v2"
	"testing"
)

// TestNoveltyDistance: a stretch that repeats an earlier one exactly is at
// distance 0 from its nearest neighbour; a stretch unlike every earlier one is
// far from all of them, in units of the scale given.
func TestNoveltyDistance(t *testing.T) {
	var v novelty
	const block, nl = 3, 4
	period := []float64{1, 1, 1, 5, 5, 5, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1}
	var d float64
	var ok bool
	for i := range 10 * len(period) {
		if v.add(block, period[i%len(period)]) {
			d, ok = v.distance(nl, novRing, 1)
		}
	}
	if !ok || d != 0 {
		t.Errorf("a repeating series: distance %g (ok %v), want 0", d, ok)
	}
	for range block * nl {
		if v.add(block, 9) {
			d, ok = v.distance(nl, novRing, 1)
		}
	}
	if !ok || d < 3 {
		t.Errorf("a stretch at 9 after a series within 1-5: distance %g (ok %v), want at least 3", d, ok)
	}
	if d2, _ := v.distance(nl, novRing, 2); d2 != d/2 {
		t.Errorf("distance at scale 2 is %g, want half of %g", d2, d)
	}
}

// onOff is a series of 5-minute steps that idles near 2 and runs a job of
// half an hour at 03:00 every day: a CPU-like share (burst near 60) or, with
// counts, a Poisson count (burst mean 60). On day shifted (if >= 0) the job
// runs at 09:00 instead.
func onOff(r *rand.Rand, i int, counts bool, shifted int) float64 {
	const perDay = 288
	start := 36
	if i/perDay == shifted {
		start = 108
	}
	burst := i%perDay >= start && i%perDay < start+6
	switch {
	case counts && burst:
		return poisson(r, 60)
	case counts:
		return poisson(r, 2)
	case burst:
		return 60 + 4*r.Float64()
	}
	return 2 + r.Float64()
}

// TestSeriesDailyBurstNoDailyAlarm: on an on/off series whose bursts recur
// every day at the same hour, no alarm is raised every day: the daily
// recurrence check (SeriesParams.Recur) holds back an alarm at a time of day
// that was as surprising on each of the two previous days. Without the check
// the bursts alarm on most days (so the test can fail). The job run at a new
// hour on day 10 alarms (the recurrence check does not hide it; whether the
// shape is novel enough is the novelty's business, hence a shape-novelty-free
// run for that part).
func TestSeriesDailyBurstNoDailyAlarm(t *testing.T) {
	const perDay, days, shifted = 288, 14, 10
	run := func(p *SeriesParams, counts bool, shiftDay int) (daily, moved int) {
		r := rand.New(rand.NewPCG(3, 4))
		var s Series
		t0 := int64(1.4e18) - int64(1.4e18)%dayNs
		alarm := surpriseToScore(p.Alarm)
		for i := range days * perDay {
			sc, _ := s.Step(p, t0+int64(i)*stepNs, onOff(r, i, counts, shiftDay))
			if sc < alarm || i < 3*perDay { // days 0-2 are the warm-up
				continue
			}
			if slot := i % perDay; i/perDay == shiftDay && slot >= 108 && slot < 108+6+int(p.NovBlock) {
				moved++
			} else {
				daily++
			}
		}
		return daily, moved
	}
	for _, counts := range []bool{false, true} {
		p := DefaultSeriesParams
		daily, _ := run(&p, counts, -1)
		off := p
		off.Recur = 0
		without, _ := run(&off, counts, -1)
		if daily > 2 {
			t.Errorf("counts %v: %d alarms over days 3-%d of a daily job, want at most 2", counts, daily, days-1)
		}
		if without < (days-3)/2 {
			t.Errorf("counts %v, no recurrence check: %d alarms over days 3-%d, want one on most days (else this test proves nothing)", counts, without, days-1)
		}
		t.Logf("counts %v: alarms over days 3-%d: %d, %d without the recurrence check", counts, days-1, daily, without)
	}
	p := DefaultSeriesParams
	p.NovBlock = 0
	if _, moved := run(&p, false, shifted); moved == 0 {
		t.Errorf("the job run at 09:00 on day %d after days at 03:00 raised no alarm", shifted)
	}
}
