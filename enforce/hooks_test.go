package enforce

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestOnExpireAndActive: Active lists the live decisions and OnExpire reports
// each decision the sweep drops, once.
func TestOnExpireAndActive(t *testing.T) {
	e := newEnv(t)
	e.publish(t,
		e.decision(t, "d-a", schemas.ActionBlock, schemas.ScopeDevice, "dev-a"),
		e.decision(t, "d-b", schemas.ActionThrottle, schemas.ScopeAPIKey, "key-b"),
		e.decision(t, "d-c", schemas.ActionBlock, schemas.ScopeIP, "198.51.100.0/24"))
	var mu sync.Mutex
	var expired []string
	r := e.start(t, Options{SweepInterval: 5 * time.Millisecond, OnExpire: func(d schemas.Decision) {
		mu.Lock()
		expired = append(expired, d.ID)
		mu.Unlock()
	}})
	r.waitSynced(t)
	ids := func() []string {
		var out []string
		for _, d := range r.Active() {
			out = append(out, d.ID)
		}
		slices.Sort(out)
		return out
	}
	if got := ids(); !slices.Equal(got, []string{"d-a", "d-b", "d-c"}) {
		t.Fatalf("Active = %q; want d-a d-b d-c", got)
	}
	e.clock.Advance(time.Hour + time.Nanosecond)
	if got := ids(); len(got) != 0 {
		t.Errorf("Active after expiry = %q; want none", got)
	}
	waitFor(t, "OnExpire for 3 decisions", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(expired) == 3
	})
	time.Sleep(20 * time.Millisecond) // a few more sweeps must not report them again
	mu.Lock()
	slices.Sort(expired)
	got := slices.Clone(expired)
	mu.Unlock()
	if !slices.Equal(got, []string{"d-a", "d-b", "d-c"}) {
		t.Errorf("OnExpire reported %q; want d-a d-b d-c once each", got)
	}
}
