package decide

import (
	"fmt"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestFreshBudget: blocks of fresh addresses (Entity.Fresh) count against
// the engine's FreshLimiter, not the device budget: a wave that spends the
// fresh budget leaves the device budget whole, and a minute of device
// blocks at the cap leaves the fresh budget whole. Past its cap, a fresh
// block is an alert carrying ReasonBlockCapHit with the fresh cap. Without
// a FreshLimiter, fresh addresses count against the device budget.
func TestFreshBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBlocksPerMinute, cfg.MaxFreshBlocksPerMinute = 2, 3
	newEngine := func(fresh bool) (*Engine, *FreshLimiter) {
		e, err := NewEngine(cfg, NewLimiter(cfg.MaxBlocksPerMinute))
		if err != nil {
			t.Fatal(err)
		}
		if !fresh {
			return e, nil
		}
		fl := NewFreshLimiter(cfg.MaxFreshBlocksPerMinute)
		e.UseFreshLimiter(fl)
		return e, fl
	}
	ipBlock := func(e *Engine, i int, fresh bool) (*schemas.Alert, *schemas.Decision) {
		ip := fmt.Sprintf("198.18.0.%d", i)
		ev := event("", "", ip, 10*time.Second+time.Duration(i)*time.Millisecond)
		ev.DeviceKey = uint64(1000 + i)
		return e.DecideEntity(ev, scored(flood), Entity{Kind: schemas.EntityIP, Value: ip, Scope: schemas.ScopeIP, Fresh: fresh})
	}
	deviceBlock := func(e *Engine, i int) *schemas.Decision {
		_, d := e.Decide(event(fmt.Sprintf("d-%d", i), "", "203.0.113.1", 20*time.Second+time.Duration(i)*time.Millisecond), scored(flood))
		return d
	}

	e, fl := newEngine(true)
	for i := range 5 {
		a, d := ipBlock(e, i, true)
		if (d != nil) != (i < 3) {
			t.Fatalf("fresh address %d: decision %v, want one only under the fresh cap of 3", i, d)
		}
		if i >= 3 {
			last := a.Reasons[len(a.Reasons)-1]
			if last.Reason != ReasonBlockCapHit || last.Expected != 3 {
				t.Errorf("refused fresh block %d: last reason %+v, want %s with 3", i, last, ReasonBlockCapHit)
			}
		}
	}
	if fl.Denied() != 2 {
		t.Errorf("fresh denied %d, want 2", fl.Denied())
	}
	for i := range 3 { // the device budget is whole
		if d := deviceBlock(e, i); (d != nil) != (i < 2) {
			t.Fatalf("device %d after a fresh wave: decision %v, want one only under the device cap of 2", i, d)
		}
	}
	// A known address (not fresh) counts against the device budget, spent.
	if _, d := ipBlock(e, 9, false); d != nil {
		t.Errorf("a known address blocked past the device cap: %+v", d)
	}

	e, _ = newEngine(false)
	for i := range 3 {
		if _, d := ipBlock(e, i, true); (d != nil) != (i < 2) {
			t.Fatalf("fresh address %d without a fresh budget: decision %v, want the device cap of 2", i, d)
		}
	}
}
