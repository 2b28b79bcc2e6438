package forwardauth

import (
	"sync"
	"time"
)

// throttler is a token bucket per throttling decision: rps requests per
// second, bursts of up to max(1, rps). A zero rps denies every throttled
// request.
type throttler struct {
	rps     float64
	mu      sync.Mutex
	buckets map[string]*tokenBucket
}

type tokenBucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the throttler's memory; beyond it the buckets restart full.
const maxBuckets = 100_000

func newThrottler(rps float64) *throttler {
	return &throttler{rps: rps, buckets: map[string]*tokenBucket{}}
}

// allow takes a token from decision id's bucket at now, if it has one.
func (t *throttler) allow(id string, now time.Time) bool {
	if t.rps <= 0 {
		return false
	}
	burst := max(1, t.rps)
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buckets[id]
	if b == nil {
		if len(t.buckets) >= maxBuckets {
			clear(t.buckets)
		}
		b = &tokenBucket{tokens: burst, last: now}
		t.buckets[id] = b
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*t.rps)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
