package volume

import "math"

// novelty is one of Series' shape-novelty channels: how far the recent stretch
// of the series is from the nearest stretch of its own past (the left matrix
// profile of a downsampled series, as in discord discovery). A stretch that
// recurs (a daily job's burst, a weekly cycle's peak) has a near neighbour and
// is not novel however large it is; a stretch unlike any in the kept history
// is. The series is cut into blocks of a few steps, each summarised by its
// mean, least and greatest value (in Core's sqrt scale), so that a spike
// survives the downsampling; a pattern is the last few blocks, compared
// without normalisation, so that a shift of level is novel too. Fixed size:
// novRing blocks of history; a step that closes a block costs one pass over
// the history (about NovHistory x NovLen x 3 operations), the others nothing.
type novelty struct {
	ring   [novRing][3]float32 // block summaries: mean, min, max
	blocks uint32              // blocks closed so far
	n      uint32              // steps in the open block
	sum    float64             // of the open block
	lo, hi float64             // of the open block
}

// novRing is the number of blocks of history a novelty channel keeps.
const novRing = 1024

// add adds y (sqrt scale) to the open block of block steps and reports
// whether that closed it.
func (v *novelty) add(block uint32, y float64) bool {
	if v.n == 0 {
		v.sum, v.lo, v.hi = 0, y, y
	}
	v.n++
	v.sum += y
	v.lo, v.hi = min(v.lo, y), max(v.hi, y)
	if v.n < block {
		return false
	}
	v.ring[v.blocks%novRing] = [3]float32{float32(v.sum / float64(v.n)), float32(v.lo), float32(v.hi)}
	v.blocks++
	v.n = 0
	return true
}

// distance returns the root-mean-square distance, in units of scale, from the
// latest pattern (the last nl closed blocks) to its nearest neighbour: the
// nearest earlier pattern of nl blocks, among the last hist closed blocks,
// that does not overlap it. False with too little history.
func (v *novelty) distance(nl, hist uint32, scale float64) (float64, bool) {
	nl = max(nl, 1)
	end := v.blocks // the latest pattern is blocks [end-nl, end)
	first := uint32(0)
	if h := min(hist, novRing); end > h {
		first = end - h
	}
	if end < first+2*nl {
		return 0, false
	}
	// Candidate patterns end (exclusive) at e in [first+nl, end-nl].
	best := math.Inf(1)
	for e := first + nl; e <= end-nl; e++ {
		d := 0.0
		for k := uint32(1); k <= nl && d < best; k++ {
			a, b := &v.ring[(end-k)%novRing], &v.ring[(e-k)%novRing]
			for j := range a {
				x := float64(a[j] - b[j])
				d += x * x
			}
		}
		best = min(best, d)
	}
	return math.Sqrt(best/float64(3*nl)) / max(scale, 1e-9), true
}
