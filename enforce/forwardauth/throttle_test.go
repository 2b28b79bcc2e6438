package forwardauth

import (
	"testing"
	"time"
)

func TestThrottler(t *testing.T) {
	th := newThrottler(2)
	t0 := time.Unix(1000, 0)
	got := ""
	for _, at := range []time.Duration{0, 0, 0, 400 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second, 2 * time.Second, 2 * time.Second} {
		if th.allow("d", t0.Add(at)) {
			got += "y"
		} else {
			got += "n"
		}
	}
	// Burst 2, then 2 tokens/s: 0.5 s refills one, 1.5 s more refills the burst.
	if got != "yynnyyyn" {
		t.Errorf("2 rps decisions %s; want yynnyyyn", got)
	}
	if th.allow("other", t0.Add(2*time.Second)) != true {
		t.Error("a second decision shares the first one's bucket")
	}
	if newThrottler(0).allow("d", t0) {
		t.Error("0 rps let a request through")
	}
}
