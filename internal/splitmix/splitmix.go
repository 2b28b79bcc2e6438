// Package splitmix is the simulators' random number generator (internal/sim,
// internal/websim): SplitMix64, tiny, fast and stable across Go releases, so
// that a seed yields the same traffic forever.
package splitmix

// RNG is one stream of numbers. The zero value is a valid stream of seed 0,
// but New decorrelates streams of one seed.
type RNG struct{ s uint64 }

// New returns the stream numbered stream of seed.
func New(seed int64, stream uint64) RNG {
	r := RNG{s: uint64(seed)*0x9e3779b97f4a7c15 ^ mix64(stream+0x632be59bd9b4e019)}
	r.Next()
	return r
}

// Next returns the next 64 random bits.
func (r *RNG) Next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	return mix64(r.s)
}

func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Float returns a number in [0, 1).
func (r *RNG) Float() float64 { return float64(r.Next()>>11) * (1.0 / (1 << 53)) }

// Intn returns a number in [0, n); n must be > 0.
func (r *RNG) Intn(n int) int { return int(r.Next() % uint64(n)) }
