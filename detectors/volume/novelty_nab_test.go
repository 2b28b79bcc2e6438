package volume

import "testing"

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
