package decide

import (
	"sync/atomic"
	"time"
)

// DefaultMaxFreshBlocksPerMinute is the default Config.MaxFreshBlocksPerMinute.
//
// Why a second budget, and why this size: the per-minute cap
// (MaxBlocksPerMinute, 100) exists so that iotwatch cannot lock the fleet
// out of its own service: a block of a device, its key or an address it uses
// costs that device its service. A block of an address seen for the first
// time seconds before, that no device uses as its own (Entity.Fresh: a bot of
// a distributed flood), costs the fleet nothing, and a botnet wave brings
// hundreds of such addresses a minute (the Mirai floods the simulator
// replays: 1,000-1,500 addresses within 3-6 minutes, up to 500 a minute):
// under the device cap, nearly all of them would go unblocked. 5,000 a
// minute holds ten such waves at once, and still bounds what a mistake can
// do: a fresh block lasts the block TTL (15 minutes by default), and an
// address is fresh only while it is new, so the budget can never reach a
// device's usual address. The two budgets are independent: a flood that
// spends the fresh budget leaves the device budget whole, and the reverse.
const DefaultMaxFreshBlocksPerMinute = 5000

// FreshLimiter caps new blocks of fresh addresses (Entity.Fresh) per
// event-time minute across the engines sharing it: the second budget next
// to Limiter's (see DefaultMaxFreshBlocksPerMinute for why), counted by a
// Budget as Limiter's is (a LocalBudget: per process). A refusal raises no
// fleet alert of its own: the refused block's alert carries
// ReasonBlockCapHit, and Denied counts the refusals. Safe for concurrent use.
type FreshLimiter struct {
	max    int
	budget Budget
	denied atomic.Uint64
}

// NewFreshLimiter returns a limiter allowing max fresh-address blocks per
// minute (0: unlimited).
func NewFreshLimiter(max int) *FreshLimiter {
	return &FreshLimiter{max: max, budget: NewLocalBudget(max)}
}

// Allow reports whether one more fresh-address block may be issued in t's
// minute (t in Unix ns, event time), and counts it if so.
func (l *FreshLimiter) Allow(t int64) bool {
	if l == nil || l.max == 0 {
		return true
	}
	if !l.budget.Take(floorDiv(t, int64(time.Minute)), 0) {
		l.denied.Add(1)
		return false
	}
	return true
}

// Denied returns how many fresh-address blocks the cap turned into alerts.
func (l *FreshLimiter) Denied() uint64 {
	if l == nil {
		return 0
	}
	return l.denied.Load()
}

// UseFreshLimiter makes e count blocks of fresh addresses (Entity.Fresh)
// against l, shared with the other engines, instead of the device budget.
// Without it (nil), they count against the device budget as every other
// block does.
func (e *Engine) UseFreshLimiter(l *FreshLimiter) { e.fresh = l }

// allowBlock reports whether the budget of ent's kind allows one more block
// at t: the fresh-address budget for a fresh address (when e has one),
// else the device budget. It returns the budget's size for the alert's
// ReasonBlockCapHit.
func (e *Engine) allowBlock(ent Entity, t int64, eventID, token uint64) (ok bool, max int) {
	if ent.Fresh && e.fresh != nil {
		return e.fresh.Allow(t), e.fresh.max
	}
	return e.limiter.allow(t, eventID, token), e.cfg.MaxBlocksPerMinute
}
