package volume

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestSeriesRebase: after a lasting tripling of a Poisson series, the core
// adopts the new level within about SeriesParams.Rebase steps of its drift
// being flagged, and stays sensitive there: a later spike is as surprising to
// it as one before the shift. Without Rebase the core's baseline stays at the
// old level (a flagged value teaches FlaggedWeight of a normal one) and its
// calibration learns that every value is surprising.
func TestSeriesRebase(t *testing.T) {
	run := func(rebase uint32) (expected, spikeBefore, spikeAfter float64, adoptedAt int) {
		p := DefaultSeriesParams
		p.Rebase = rebase
		r := rand.New(rand.NewPCG(3, 4))
		var s Series
		t0 := int64(1.4e18)
		const shift, n = 3000, 4500
		adoptedAt = -1
		spike := func(i int, x float64) float64 {
			c := s.core // a probe: the series itself does not see the spike
			point, _, _ := c.Step(&p.Core, t0+int64(i)*stepNs, x)
			return point
		}
		for i := range n {
			lambda := 20.0
			if i >= shift {
				lambda = 60
			}
			if i == shift-1 {
				spikeBefore = spike(i, 3*lambda)
			}
			s.Step(&p, t0+int64(i)*stepNs, poisson(r, lambda))
			if e := s.core.level * s.core.level; adoptedAt < 0 && i >= shift && math.Abs(e-60) < 10 {
				adoptedAt = i - shift
			}
		}
		return s.core.level * s.core.level, spikeBefore, spike(n, 180), adoptedAt
	}
	expected, before, after, at := run(DefaultSeriesParams.Rebase)
	t.Logf("rebase %d: baseline %.1f (adopted %d steps after the shift), 3x spike surprise %.2f before the shift, %.2f after", DefaultSeriesParams.Rebase, expected, at, before, after)
	if at < 0 || at > 4*int(DefaultSeriesParams.Rebase) {
		t.Errorf("baseline adopted the new level %d steps after the shift, want within %d", at, 4*DefaultSeriesParams.Rebase)
	}
	if math.Abs(expected-60) > 10 {
		t.Errorf("baseline %.1f long after a shift from 20 to 60, want about 60", expected)
	}
	if after < before/2 {
		t.Errorf("a 3x spike after the adopted shift: core surprise %.2f decades, want at least half of the %.2f it had before the shift", after, before)
	}
	expected, before, after, _ = run(0)
	t.Logf("rebase off: baseline %.1f, 3x spike surprise %.2f before the shift, %.2f after", expected, before, after)
	if math.Abs(expected-20) > 10 {
		t.Errorf("without Rebase: baseline %.1f, want it still near the old level 20 (flagged values teach little): the comparison above tests nothing", expected)
	}
	if after >= before {
		t.Errorf("without Rebase: a 3x spike after the shift has core surprise %.2f, want less than the %.2f before it (the blindness Rebase is for)", after, before)
	}
}
