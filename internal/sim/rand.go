package sim

import "github.com/iotwatch/iotwatch/internal/splitmix"

// rng is splitmix64 (package splitmix): a seed yields the same fleet forever.
type rng struct{ splitmix.RNG }

func newRNG(seed int64, stream uint64) rng { return rng{splitmix.New(seed, stream)} }

// between returns a number in [lo, hi].
func (r *rng) between(lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	return lo + int64(r.Next()%uint64(hi-lo+1))
}

// uniform returns a number in [lo, hi).
func (r *rng) uniform(lo, hi float64) float64 { return lo + (hi-lo)*r.Float() }
