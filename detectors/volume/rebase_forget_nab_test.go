package volume

import (
	"math/rand/v2"
	"testing"
)

// secondAnomaly runs a Poisson series of mean 20 that moves to 60 from step
// 3000 on (back to 20 at step burstEnd, if not 0), and returns the
// calibrated surprise, before and at step 4199, of a probe of 3x the level of
// the moment (the series itself does not see the probes), and the steps at
// which the surprise history forgot a shift's run (its mass fell).
func secondAnomaly(p SeriesParams, burstEnd int) (before, after float64, forgot []int) {
	r := rand.New(rand.NewPCG(5, 6))
	var s Series
	t0 := int64(1.4e18)
	for i := range 4200 {
		lambda := 20.0
		if i >= 3000 && (burstEnd == 0 || i < burstEnd) {
			lambda = 60
		}
		if i == 2999 || i == 4199 {
			probe := s
			_, c := probe.Step(&p, t0+int64(i)*stepNs, 3*lambda)
			if i == 2999 {
				before = c
			} else {
				after = c
			}
		}
		mass := s.hist.mass
		s.Step(&p, t0+int64(i)*stepNs, poisson(r, lambda))
		if s.hist.mass < mass {
			forgot = append(forgot, i)
		}
	}
	return before, after, forgot
}

// TestSeriesSecondAnomalyAfterShift: once a lasting shift of level has been
// adopted (Rebase) and has held, the surprise history forgets the giant
// surprises of the shift's own run (the model's lag, not the series' tail), so
// a 3x spike 1,200 steps after the shift raises an alarm, as one before the
// shift does. Without RebaseForget those surprises stretch the history's tail
// and the spike is judged below the alarm level (NAB's
// rds_cpu_utilization_e47b3b: its second window was missed that way).
func TestSeriesSecondAnomalyAfterShift(t *testing.T) {
	p := DefaultSeriesParams
	before, after, forgot := secondAnomaly(p, 0)
	t.Logf("forget: 3x spike %.2f decades before the shift, %.2f after", before, after)
	if before < p.Alarm || after < p.Alarm {
		t.Errorf("a 3x spike: %.2f decades before the shift, %.2f after it was adopted, want both at least the alarm level %g", before, after, p.Alarm)
	}
	if len(forgot) != 1 {
		t.Errorf("the history forgot a run at steps %v, want once, after the shift at step 3000", forgot)
	}
	p.RebaseForget = false
	_, off, _ := secondAnomaly(p, 0)
	t.Logf("no forget: 3x spike %.2f decades after the shift", off)
	if off >= p.Alarm {
		t.Errorf("without RebaseForget a 3x spike after the shift is judged %.2f decades, want below the alarm level %g (the blindness RebaseForget is for): the test tests nothing", off, p.Alarm)
	}
}

// TestSeriesBurstNotForgotten: a burst long enough to be adopted as a shift
// (100 steps at 3x) that then ends is not a shift: the run of flagged drift
// back down starts before RebaseConfirm steps, and the burst's run is not
// forgotten (only the return's, once the old level has held). With
// RebaseConfirm 0 (forget at adoption) the burst's run would be forgotten
// too.
func TestSeriesBurstNotForgotten(t *testing.T) {
	p := DefaultSeriesParams
	_, _, forgot := secondAnomaly(p, 3100)
	t.Logf("burst of steps 3000-3099: history forgot a run at steps %v (confirm %d)", forgot, p.RebaseConfirm)
	for _, i := range forgot {
		if i < 3100+int(p.RebaseConfirm) {
			t.Errorf("the history forgot a run at step %d, before the return to the old level (step 3100) had held for %d steps", i, p.RebaseConfirm)
		}
	}
	p.RebaseConfirm = 0
	_, _, now := secondAnomaly(p, 3100)
	t.Logf("confirm 0: history forgot a run at steps %v", now)
	if len(now) == 0 || now[0] >= 3100 {
		t.Errorf("forgetting at adoption: runs forgotten at steps %v, want one during the burst: the test tests nothing", now)
	}
}
