// Package decide turns scored events into alerts and block decisions: it combines
// detector scores, alerts on the combined scores its calibration rates as rare
// enough for the alert budget (calibration.go; a fixed threshold while it warms
// up, or when no budget is set), assigns a severity, groups alerts per device
// and reason over a cool-down (a higher severity updates the group), and
// issues block decisions above a threshold, subject to an allowlist, dry-run
// and a cap on new blocks per minute.
//
// What judges a client depends on what it is (detectors.SubjectOf): a device
// its source identified is judged by every finding and blocked at the block
// threshold; any other client (an address, or a person's or a script's
// login) is judged by absolute findings alone (KeepAbsolute) and blocked
// only on one scoring at least AddressBlockScore.
//
// An Engine holds per-device bookkeeping and belongs to one worker (one writer per
// device); the block-rate Limiter, the AllowlistRef and the Calibration are shared by all engines. All times are event
// times, so replaying the same events yields the same alerts and decisions.
//
// What spans the instances of a cluster is injected, so that the engine
// stays pure: the Limiter counts through a Budget (LocalBudget in this
// process, the default, which replay and evaluation use; package cluster's
// KV budget for every instance), and the allowlist is read from an
// AllowlistRef that package cluster keeps equal to a shared KV bucket.
package decide

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/schemas"
)

// Config is the alert and block policy.
type Config struct {
	// AlertThreshold is the combined score at or above which an alert is
	// raised when AlertBudget is 0, and while the calibration warms up.
	AlertThreshold float64
	// AlertBudget, when > 0, sets the alert threshold from the calibration
	// (Calibration, shared by the engines: UseCalibration) instead: the
	// estimated false alerts per 1,000 device-hours the alerts may cost. An
	// event alerts when its combined score is at least MinAlertScore and its
	// estimated false-alarm rate (Calibration.Rate, for its class and
	// cause) is at most the level the budget solves to. Until the
	// calibration has CalibrationWarmup device-hours, AlertThreshold
	// applies. Blocks keep BlockThreshold and are decided only on an event
	// that alerts: the budget can raise the bar of a block, never lower it.
	AlertBudget float64
	// MinAlertScore is the lowest combined score that alerts under
	// AlertBudget, at least MinCalibratedScore.
	MinAlertScore float64
	// BlockThreshold is the combined score at or above which a block is decided.
	BlockThreshold float64
	// Cooldown makes the alerts of one device and reason an alert group:
	// two groups of one device and reason are at least Cooldown apart in
	// event time, in whatever order the events arrive (see ReorderWindow for
	// the bound). Within a group, a higher severity, or a block the score
	// warrants, is an update of the group: an alert with the group's ID (the
	// ID of the alert that opened it) and FirstEventID, not a new group.
	Cooldown time.Duration
	// BlockTTL is how long a first block lasts; repeat offenders get doubled
	// TTLs up to MaxBlockTTL.
	BlockTTL    time.Duration
	MaxBlockTTL time.Duration
	// Scope is "auto", "device" or a fixed schemas.ScopeAPIKey, ScopeIP or
	// ScopeTenant. "device" blocks the device in the namespace of its
	// identity (IdentityScope), which its source's enforcement point can
	// match; "auto" does the same, except that a request that failed
	// authentication blocks its client address (an attacker's failed login
	// must not lock the real device out) and a suspected stolen API key (a
	// geography finding on an event carrying a key) blocks the key. A fixed
	// scope the event lacks (no key, no IP, no tenant) falls back to
	// IdentityScope.
	Scope string
	// DryRun publishes would_block decisions instead of blocks.
	DryRun bool
	// MaxBlocksPerMinute caps new blocks fleet-wide (by event-time minute);
	// beyond it the engine alerts only. 0 means no cap.
	MaxBlocksPerMinute int
	// MaxFreshBlocksPerMinute caps new blocks of fresh addresses
	// (Entity.Fresh) per minute, a budget of its own
	// (DefaultMaxFreshBlocksPerMinute says why). 0 means no cap.
	MaxFreshBlocksPerMinute int
	// Allowlist entries are never blocked: device ids, API key ids, IPs or CIDRs.
	Allowlist []string
	// Issuer names this pipeline instance in decisions.
	Issuer string
	// Now, when set, is the wall clock a published decision's expiry counts
	// from: ExpiresAt = max(event time, Now()) + TTL, so that a lagging
	// pipeline or a backfill does not publish blocks that have already
	// expired. Nil counts from the event time alone, which keeps replay,
	// evaluation and golden scenarios deterministic; the live pipeline sets
	// time.Now. The engine's own bookkeeping (cool-downs, strikes, Blocked)
	// stays in event time either way, as does CreatedAt (part of the
	// decisions table's key, so that a redelivery replaces its row).
	Now func() time.Time
}

// DefaultAlertBudget is the default AlertBudget, in estimated false alerts
// per 1,000 device-hours (bench/RESULTS.md, "Calibrated alert threshold",
// has the measurements it was chosen on): 0.5, the target, that is
// one false alert group an hour for a fleet of 2,000 devices.
const DefaultAlertBudget = 0.5

// DefaultMinAlertScore is the default MinAlertScore: under the budget, a
// rare cause may alert below the fixed AlertThreshold (0.6), down to this.
// Chosen with the budget (bench/RESULTS.md): 0.5 added false alerts on the
// basic traffic model, 0.6 missed a parameter tampering on the field one.
const DefaultMinAlertScore = 0.55

// DefaultConfig returns the policy the demo and `iotwatch run` start from.
func DefaultConfig() Config {
	return Config{
		AlertThreshold:     0.6,
		AlertBudget:        DefaultAlertBudget,
		MinAlertScore:      DefaultMinAlertScore,
		BlockThreshold:     0.9,
		Cooldown:           5 * time.Minute,
		BlockTTL:           15 * time.Minute,
		MaxBlockTTL:        24 * time.Hour,
		Scope:              "auto",
		MaxBlocksPerMinute: 100,
		Issuer:             "iotwatch",

		MaxFreshBlocksPerMinute: DefaultMaxFreshBlocksPerMinute,
	}
}

// Validate names the first invalid field; its error is a *FieldError.
func (c Config) Validate() error {
	switch {
	case !(c.AlertThreshold > 0 && c.AlertThreshold <= 1):
		return badField("alert_threshold", c.AlertThreshold, "must be in (0,1]")
	case !(c.BlockThreshold > 0 && c.BlockThreshold <= 1):
		return badField("block_threshold", c.BlockThreshold, "must be in (0,1]")
	case c.BlockThreshold < c.AlertThreshold:
		return badPair("block_threshold", c.BlockThreshold, "must be >=", "alert_threshold", c.AlertThreshold)
	case !(c.AlertBudget >= 0 && c.AlertBudget <= 1000):
		return badField("alert_budget", c.AlertBudget, "must be in [0,1000]")
	case c.AlertBudget > 0 && !(c.MinAlertScore >= MinCalibratedScore && c.MinAlertScore <= 1):
		return badField("min_alert_score", c.MinAlertScore, fmt.Sprintf("must be in [%g,1]", MinCalibratedScore))
	case c.Cooldown < 0:
		return badField("cooldown", c.Cooldown, "must be >= 0")
	case c.BlockTTL <= 0:
		return badField("block_ttl", c.BlockTTL, "must be > 0")
	case c.MaxBlockTTL < c.BlockTTL:
		return badPair("max_block_ttl", c.MaxBlockTTL, "must be >=", "block_ttl", c.BlockTTL)
	case c.MaxBlocksPerMinute < 0:
		return badField("max_blocks_per_minute", c.MaxBlocksPerMinute, "must be >= 0")
	case c.MaxFreshBlocksPerMinute < 0:
		return badField("max_fresh_blocks_per_minute", c.MaxFreshBlocksPerMinute, "must be >= 0")
	}
	switch c.Scope {
	case "auto", schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeIP, schemas.ScopeTenant:
	default:
		return badField("scope", fmt.Sprintf("%q", c.Scope), "must be auto, device, api_key, ip or tenant")
	}
	if _, err := ParseAllowlist(c.Allowlist); err != nil {
		return &FieldError{Config: "decide", Field: "allowlist", Err: err}
	}
	return nil
}

// Allowlist matches device ids, API key ids, IPs and CIDRs.
type Allowlist struct {
	names    map[string]bool
	prefixes []netip.Prefix
}

// ParseAllowlist parses entries; an entry that looks like an address or CIDR
// must parse as one.
func ParseAllowlist(entries []string) (*Allowlist, error) {
	a := &Allowlist{names: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("cannot parse CIDR %q: %w", e, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(e); err == nil {
			a.prefixes = append(a.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
			continue
		}
		a.names[e] = true
	}
	return a, nil
}

// Len returns the number of entries of a (names, addresses and CIDRs).
func (a *Allowlist) Len() int {
	if a == nil {
		return 0
	}
	return len(a.names) + len(a.prefixes)
}

// Merge returns an allowlist of a's entries and b's; either may be nil.
func (a *Allowlist) Merge(b *Allowlist) *Allowlist {
	m := &Allowlist{names: map[string]bool{}}
	for _, x := range []*Allowlist{a, b} {
		if x == nil {
			continue
		}
		for n := range x.names {
			m.names[n] = true
		}
		m.prefixes = append(m.prefixes, x.prefixes...)
	}
	return m
}

// AllowlistRef holds the allowlist in force for engines that share it
// (Engine.UseAllowlist). Store replaces it as a whole while engines read it:
// how a shared allowlist (package cluster's bucket) reaches running engines
// without a restart. A block decided before a Store is not undone by it.
// Safe for concurrent use.
type AllowlistRef struct{ p atomic.Pointer[Allowlist] }

// NewAllowlistRef returns a reference holding a (nil: nothing allowlisted).
func NewAllowlistRef(a *Allowlist) *AllowlistRef {
	r := &AllowlistRef{}
	r.p.Store(a)
	return r
}

// Load returns the allowlist in force.
func (r *AllowlistRef) Load() *Allowlist { return r.p.Load() }

// Store puts a in force; a must not be changed afterwards.
func (r *AllowlistRef) Store(a *Allowlist) { r.p.Store(a) }

// Allows reports whether the event's device, API key or IP is allowlisted.
func (a *Allowlist) Allows(ev *schemas.Event) bool {
	if a == nil {
		return false
	}
	if len(a.names) > 0 && (a.names[string(ev.Device)] || (len(ev.APIKey) > 0 && a.names[string(ev.APIKey)])) {
		return true
	}
	if ev.ClientIP.IsValid() {
		for _, p := range a.prefixes {
			if p.Contains(ev.ClientIP) {
				return true
			}
		}
	}
	return false
}

// AllowsEntity reports whether a block of scope and value would hit an
// allowlisted entry: the same name, or for an IP or CIDR scope, an address
// range that overlaps an allowlisted one (a /24 that holds one allowlisted
// address is not blocked).
func (a *Allowlist) AllowsEntity(scope, value string) bool {
	if a == nil {
		return false
	}
	if a.names[value] {
		return true
	}
	if scope != schemas.ScopeIP && scope != schemas.ScopeCIDR {
		return false
	}
	var p netip.Prefix
	if ip, err := netip.ParseAddr(value); err == nil {
		p = netip.PrefixFrom(ip, ip.BitLen())
	} else if p, err = netip.ParsePrefix(value); err != nil {
		return false
	}
	for _, q := range a.prefixes {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// Limiter caps new blocks per event-time minute across all engines. The
// count itself is a Budget's: LocalBudget, in this process (NewLimiter, what
// replay and evaluation use), or one shared by every instance of a cluster
// (package cluster's KV budget), so that the cap holds for the cluster. The
// first refusal of a minute also raises one fleet alert "block cap hit" (see
// AppendAlerts): the cap is a safety net, and an operator must know when it
// holds blocks back.
type Limiter struct {
	max    int
	budget Budget

	mu      sync.Mutex
	minute  int64
	refused int // in the current minute
	denied  uint64
	pending []schemas.Alert // fleet alerts not yet taken by AppendAlerts
}

// A Budget grants at most a fixed number of takes per event-time minute:
// the count behind a cap (the Limiter's new blocks; a second cap, such as one
// on blocks of never-seen addresses, is a second Budget). Implementations
// must be safe for concurrent use, must answer in bounded time (a shared
// budget whose store is unreachable answers from a local share, never
// waits for it indefinitely), and should be idempotent per token within a
// minute: a take asked again with the token it was granted with is granted
// again without counting twice (a redelivered event gets the decision it
// got the first time).
type Budget interface {
	// Take reports whether one more take, named token, fits in minute m
	// (event-time minutes since the Unix epoch, rounded down), and counts it
	// when it does.
	Take(m int64, token uint64) bool
}

// LocalBudget is a Budget of one process: max takes per minute (0:
// unlimited), counted for the minute last asked: a take of another minute
// starts that minute's count over (the engines' clocks move forward). It is
// deterministic (the same takes in the same order get the same answers),
// which replay and evaluation need. It does not remember tokens: one
// engine never asks twice for a block in force.
type LocalBudget struct {
	mu     sync.Mutex
	max    int
	minute int64
	n      int
}

// NewLocalBudget returns a budget of max takes a minute (0: unlimited).
func NewLocalBudget(max int) *LocalBudget { return &LocalBudget{max: max} }

// Take implements Budget.
func (b *LocalBudget) Take(m int64, _ uint64) bool {
	if b.max == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if m != b.minute {
		b.minute, b.n = m, 0
	}
	if b.n >= b.max {
		return false
	}
	b.n++
	return true
}

// maxPendingAlerts bounds the fleet alerts a Limiter keeps for AppendAlerts;
// beyond it the oldest is dropped (a caller that never takes them leaks nothing).
const maxPendingAlerts = 64

// NewLimiter returns a limiter allowing max blocks per minute (0: unlimited),
// counted in this process (LocalBudget).
func NewLimiter(max int) *Limiter { return NewBudgetLimiter(max, NewLocalBudget(max)) }

// NewBudgetLimiter returns a limiter allowing the blocks b grants, at most
// max per minute (0: unlimited, b is then not asked): max names the cap in
// the fleet alert and must be the cap b counts to.
func NewBudgetLimiter(max int, b Budget) *Limiter { return &Limiter{max: max, budget: b} }

// Allow reports whether one more block may be issued in t's minute.
func (l *Limiter) Allow(t int64) bool { return l.allow(t, 0, 0) }

// allow is Allow for the event eventID at t (the fleet alert names the
// event), for the block named token (the budget's idempotency key).
func (l *Limiter) allow(t int64, eventID, token uint64) bool {
	if l == nil || l.max == 0 {
		return true
	}
	m := floorDiv(t, int64(time.Minute))
	// Outside the lock: a shared budget may ask its store.
	ok := l.budget.Take(m, token)
	l.mu.Lock()
	defer l.mu.Unlock()
	if m != l.minute {
		l.minute, l.refused = m, 0
	}
	if ok {
		return true
	}
	l.denied++
	l.refused++
	if l.refused == 1 {
		if len(l.pending) == maxPendingAlerts {
			l.pending = append(l.pending[:0], l.pending[1:]...)
		}
		l.pending = append(l.pending, capAlert(m, t, eventID, l.max))
	}
	return false
}

// floorDiv is a / b rounded down (b > 0), so minutes before 1970 are whole too.
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b < 0 {
		q--
	}
	return q
}

// capAlert is the fleet alert of the first block the cap refused in minute m:
// at time t (nanoseconds), for event eventID, with at most max blocks a minute.
// Its ID depends only on the minute, so at most one per minute reaches the
// alert stream and the alerts table. Device and tenant are empty (it concerns
// the whole fleet); the severity is high and the score 1. Its one reason is
// ReasonBlockCapHit with the blocks wanted in the minute so far (max+1: this
// is the first refusal) as observed and max as expected. The number of blocks
// refused in the minute in the end is the number of alerts carrying the
// reason ReasonBlockCapHit on a device in that minute, and the
// iotwatch_blocks_capped_total metric counts them all.
func capAlert(m, t int64, eventID uint64, max int) schemas.Alert {
	minute := time.Unix(0, m*int64(time.Minute)).UTC()
	id := "a-" + strconv.FormatUint(schemas.HashString(ReasonBlockCapHit+"/"+minute.Format(time.RFC3339)), 16)
	return schemas.Alert{
		ID:       id,
		Group:    id,
		Time:     time.Unix(0, t).UTC(),
		Score:    1,
		Severity: schemas.SeverityHigh,
		Reasons: []schemas.Explanation{{Detector: detectorDecide, Reason: ReasonBlockCapHit, Score: 1,
			Observed: float64(max + 1), Expected: float64(max),
			ObservedLabel: "blocks wanted in the minute from " + minute.Format("15:04"), ExpectedLabel: "max blocks per minute"}},
		FirstEventID: eventID,
		LastEventID:  eventID,
		SchemaV:      schemas.SchemaVersion,
	}
}

// AppendAlerts appends to dst the fleet "block cap hit" alerts raised since
// the last call, oldest first, and forgets them. The pipeline publishes them
// with the alerts of its next flush; replay writes them after the event that
// raised them. With one engine (replay), which event raises an alert and what
// the alert says depend only on the events and their times.
func (l *Limiter) AppendAlerts(dst []schemas.Alert) []schemas.Alert {
	if l == nil {
		return dst
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	dst = append(dst, l.pending...)
	clear(l.pending)
	l.pending = l.pending[:0]
	return dst
}

// Denied returns how many blocks the cap turned into alert-only.
func (l *Limiter) Denied() uint64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.denied
}

// Engine decides for the devices of one worker. Not safe for concurrent use.
type Engine struct {
	cfg     Config
	allow   *AllowlistRef
	limiter *Limiter
	fresh   *FreshLimiter // nil: fresh addresses count against limiter (fresh.go)
	cal     *Calibration  // nil: none (AlertThreshold only)

	cooled  map[coolKey]cooldown // (device, reason and severity) -> the times its alerts cover
	blocks  map[string]block     // scope key -> active block
	blocked map[uint64]int64     // device key -> expiry of the latest block issued on its events
	checked int64                // event time of the last pruning
	latest  int64                // the engine's clock: the largest event time decided on, or Tick's
	ticked  bool                 // Tick sets the clock: Decide does not move it
	keyBuf  []byte               // a block's scope key being looked up (scope, 0, value)
}

// coolKey names a cool-down: the device key, and a hash of the reason and
// the severity. The device key is kept whole so that a checkpoint can move
// the entry to the engine of the worker that owns the device (state.go).
type coolKey struct {
	device uint64
	cause  uint64
}

type block struct {
	expires int64
	strikes int
	device  uint64 // the device on whose event the block was issued (its owner, for re-sharding)
}

// NewEngine returns an engine; cfg must be valid.
func NewEngine(cfg Config, limiter *Limiter) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	allow, _ := ParseAllowlist(cfg.Allowlist)
	return &Engine{cfg: cfg, allow: NewAllowlistRef(allow), limiter: limiter,
		cooled: map[coolKey]cooldown{}, blocks: map[string]block{}, blocked: map[uint64]int64{}, latest: math.MinInt64}, nil
}

// UseAllowlist makes e read its allowlist from r, shared with the other
// engines of the pipeline, instead of its own from Config.Allowlist (r
// should hold those entries too: cluster.WatchAllowlist merges them).
func (e *Engine) UseAllowlist(r *AllowlistRef) { e.allow = r }

// UseCalibration makes e learn into and (with Config.AlertBudget) alert by
// c, shared with the other engines of the pipeline.
func (e *Engine) UseCalibration(c *Calibration) { e.cal = c }

// Calibration returns the calibration e uses, nil if none.
func (e *Engine) Calibration() *Calibration { return e.cal }

// calibrated reports whether the budget sets the threshold now.
func (e *Engine) calibrated() bool { return e.cfg.AlertBudget > 0 && e.cal.Ready() }

// floor is the lowest score that may alert now.
func (e *Engine) floor() float64 {
	if e.calibrated() {
		return e.cfg.MinAlertScore
	}
	return e.cfg.AlertThreshold
}

// Blocked reports whether this engine issued a block (not a dry run) on one
// of ev's device's events, whatever its scope, that is still active at ev's
// time: the device's requests are then refused by the enforcement points, and
// what they log is the enforcement, not the device's behaviour. An engine
// knows only the blocks it issued since it started (not those of other
// instances or from before a restart), and not that an operator lifted one
// early: a log that carries the enforcement point's own verdict
// (schemas.Event.Verdict) says better. It does not allocate.
//
// A refused connection that names no stronger identity than an MQTT client id
// or the address (Mosquitto logs a connection its dynamic security plugin
// refuses with the client id alone, the same words for a disabled client as
// for a wrong password) is taken for the enforcement too when it comes from
// the address a device this engine blocked was last seen at: a blocked
// device's reconnect loop must not escalate its own block into a block of its
// address, which blocks everyone behind it (a household's, an office's or a
// gateway's NAT). The price, while the block lasts: a brute force with client
// ids from that one address is not judged.
func (e *Engine) Blocked(ev *schemas.Event) bool {
	if until, ok := e.blocked[ev.DeviceKey]; ok && ev.Time < until {
		return true
	}
	return e.refusedForBlock(ev)
}

// refusedForBlock reports whether ev is a refused connection that names no
// stronger identity than an MQTT client id or the address, from the address
// of a device this engine blocked, while that block lasts or within
// RefusalGrace after it (see Blocked). Decide never blocks the address on
// such an event, SkipBlocked or not.
func (e *Engine) refusedForBlock(ev *schemas.Event) bool {
	if !refusedAnonymously(ev) {
		return false
	}
	until, ok := e.blocked[refusedKey(ev)]
	return ok && ev.Time < until
}

// RefusalGrace is how long after a block's expiry a refusal from the
// blocked device's address is still taken for the block's (refusedForBlock):
// an enforcer lifts a block on its own clock, a broker logs whole seconds,
// and a device retries on its own schedule.
const RefusalGrace = 30 * time.Second

// refusedAnonymously reports whether ev is a refused connection or request
// identified by an MQTT client id or its address alone.
func refusedAnonymously(ev *schemas.Event) bool {
	return ev.FailedAuth() && ev.ClientIP.IsValid() && (ev.IDMethod == schemas.IDMQTTClient || ev.IDMethod == schemas.IDClientIP)
}

// refusedKey is the key in Engine.blocked of ev's tenant and address: the
// expiry of the latest block issued on a device seen at that address.
func refusedKey(ev *schemas.Event) uint64 {
	a := ev.ClientIP.As16()
	return schemas.Hash2(ev.Tenant, a[:]) ^ refusedSalt
}

// refusedSalt keeps the address keys of Engine.blocked apart from device keys
// (a device identified by its address hashes its text, not these 16 bytes).
const refusedSalt = 0x5be0cd19137e2179

// BlockedUntil returns the event time (Unix ns) the latest block issued on
// the device's events expires at, 0 if none was: what Blocked judges by,
// unlike a decision's ExpiresAt, which may count from the wall clock
// (Config.Now).
func (e *Engine) BlockedUntil(device uint64) int64 { return e.blocked[device] }

// Tick moves the engine's clock, which prunes cool-downs and blocks, to now
// (Unix ns, event time) if later. Once Tick is called, Decide no longer
// moves the clock by the times of the events it decides on: a caller with a
// clock no single event can push ahead (the worker's, see worker.Clock)
// keeps a future-dated event from pruning every cool-down.
func (e *Engine) Tick(now int64) {
	e.ticked = true
	e.latest = max(e.latest, now)
}

// AddressBlockScore is the evidence a block of a client that is no device
// identity needs (detectors.Subject.Device is false: an address, or a
// person's or a script's login): one absolute finding (detectors.Absolute)
// scoring at least this, whatever the combined score. An address may be a
// NAT shared by a household, an office or a gateway's devices, and nothing
// but its own requests vouches for what it is: several weaker findings
// together never block it. A device its source identified blocks at the
// block threshold, as before.
const AddressBlockScore = 0.95

// KeepAbsolute drops from s the findings whose reasons are not absolute
// (detectors.Absolute), keeping the order of the rest: what judges a client
// that is no device identity (detectors.Subject.Device is false). Such a
// client has no baseline worth judging against (page loads are bursts, an
// export runs at the top of the hour, an office or a gateway shares one
// address), so its rate spikes, new commands and response sizes are not
// findings about it. It does not allocate.
func KeepAbsolute(s *schemas.Scored) {
	n := 0
	for i := range s.N {
		if detectors.Absolute(s.Findings[i].Reason) {
			s.Findings[n] = s.Findings[i]
			n++
		}
	}
	s.N = n
}

// absoluteScore returns the highest score of s's absolute findings, 0 if none.
func absoluteScore(s *schemas.Scored) float32 {
	var top float32
	for _, f := range s.Reasons() {
		if f.Score > top && detectors.Absolute(f.Reason) {
			top = f.Score
		}
	}
	return top
}

// Combine returns the noisy-or of the findings' scores: independent evidence
// accumulates, and one certain finding is enough.
func Combine(s *schemas.Scored) float32 {
	p := 1.0
	for _, f := range s.Reasons() {
		p *= 1 - math.Min(1, math.Max(0, float64(f.Score)))
	}
	return float32(1 - p)
}

// Severity maps a combined score to a severity ("" below the lowest score
// that may alert: AlertThreshold, or MinAlertScore once the budget sets
// the threshold).
func (e *Engine) Severity(score float64) string {
	switch {
	case score < e.floor():
		return ""
	case score >= 0.97:
		return schemas.SeverityCritical
	case score >= e.cfg.BlockThreshold:
		return schemas.SeverityHigh
	case score >= (e.cfg.AlertThreshold+e.cfg.BlockThreshold)/2:
		return schemas.SeverityMedium
	default:
		return schemas.SeverityLow
	}
}

// Decide sets s.Score and returns an alert and a decision when warranted (nil
// otherwise). It does not retain ev or s. The common path (score below the
// lowest that may alert) does not allocate.
//
// Alert groups: an alert opens a group per reason of its event (device and
// reason). Every later event of the device that scores an alert with the
// reason extends the group to Config.Cooldown after it, so a group spans a
// run of such events at most Cooldown apart. A later event of the device with reasons
// that all have an open group is news only when its severity is higher than
// the group's, or when it warrants a block: it is then an update of the
// group: an alert of its own (ID, time, score, severity, reasons) whose
// Group and FirstEventID are those of the group of its first covered
// reason, so that one device and cause over a span is one alert group,
// whatever its severity does. An event with a reason that has no open group
// opens new groups (its Group is its own ID).
func (e *Engine) Decide(ev *schemas.Event, s *schemas.Scored) (*schemas.Alert, *schemas.Decision) {
	return e.decide(ev, s, Entity{})
}

// Entity names what an entity decision is about (DecideEntity).
type Entity struct {
	// Kind is the entity kind (schemas.EntityIP, schemas.EntityPrefix, ...).
	Kind string
	// Value is the entity's text: an address, a CIDR, a key id.
	Value string
	// Scope is the decision scope that blocks it (schemas.ScopeIP,
	// schemas.ScopeCIDR, schemas.ScopeAPIKey); empty: the entity is alerted
	// on, never blocked (a tenant).
	Scope string
	// Fresh marks an address first seen moments before (see package entity:
	// new, in its first seconds, and no device's identity): its block counts
	// against the engine's FreshLimiter (UseFreshLimiter), not the device
	// budget.
	Fresh bool
}

// DecideEntity is Decide for an entity rather than a device: ev is the
// entity's synthetic event, whose DeviceKey is the entity's key (cool-downs,
// blocks and strikes are kept by it, as a device's), ID the event that
// judged it, Time its time and ClientIP its address (for an IP or a
// prefix). The alert names the entity (EntityKind, Entity) and no device;
// a block is of scope ent.Scope and value ent.Value, under the same
// allowlist (an IP or a prefix that overlaps an allowlisted one is never
// blocked), dry-run, per-minute cap (the limiter is shared with the
// devices' engines; a fresh address's block has its own, FreshLimiter) and
// escalation as devices' blocks.
func (e *Engine) DecideEntity(ev *schemas.Event, s *schemas.Scored, ent Entity) (*schemas.Alert, *schemas.Decision) {
	return e.decide(ev, s, ent)
}

func (e *Engine) decide(ev *schemas.Event, s *schemas.Scored, ent Entity) (*schemas.Alert, *schemas.Decision) {
	// A client that is not a device (an address alone, a browser) is judged
	// only by absolute findings. An entity's findings are about the entity
	// itself (an IP failing auth for many identities) and are kept.
	if len(s.Reasons()) == 0 { // nearly every event: no user agent to classify
		s.Score = 0
		return nil, nil
	}
	device := true
	if ent.Kind == "" {
		if device = detectors.SubjectOf(ev).Device(); !device {
			KeepAbsolute(s)
		}
	}
	s.Score = Combine(s)
	score := float64(s.Score)
	if score < e.floor() {
		return nil, nil
	}
	rate := 0.0
	if e.cal != nil {
		class, cause := CalibrationClass(ev), CauseOf(s)
		rate = e.cal.Rate(class, cause, score)
		// The budget hides what is as common for its class and cause as it
		// allows no alert for, but never a score that warrants a block nor
		// an absolute finding (a known-bad probe, a burst of failed logins):
		// a campaign of many devices or addresses of one cause would
		// otherwise raise its own class's threshold and hide itself, and
		// another attack of that cause with it.
		if e.calibrated() && !e.cal.Alerts(class, cause, score, rate) && score < e.cfg.BlockThreshold && float64(absoluteScore(s)) < e.floor() {
			return nil, nil
		}
	}
	if ev.Time > e.latest && !e.ticked {
		e.latest = ev.Time
	}
	e.prune(e.latest)
	// An alert is news when one of its reasons was not alerted for this device
	// within the cool-down, before or after the event's time (see cooldown);
	// a higher severity is an update of the group.
	sev := e.Severity(score)
	rank := sevRank(sev)
	fresh, escalate := false, false
	var group, first uint64
	cd := int64(e.cfg.Cooldown)
	var opened [schemas.MaxFindings]bool
	for i, f := range s.Reasons() {
		k := coolKey{device: ev.DeviceKey, cause: schemas.HashString(f.Reason)}
		c := e.cooled[k]
		if !c.covers(ev.Time) {
			fresh = true
			opened[i] = true
			c.add(ev.Time, cd)
			e.cooled[k] = c
			continue
		}
		if group == 0 && c.group != 0 {
			group, first = c.group, c.first
		}
		if rank > c.sev {
			escalate = true
			c.sev = rank
		}
		c.add(ev.Time, cd) // the group lasts as long as its findings keep coming
		e.cooled[k] = c
	}
	// A block is due whenever the score warrants one and the scope is not
	// blocked yet, even if the alert itself is a repeat.
	wantBlock := score >= e.cfg.BlockThreshold
	withheld := false
	if ent.Kind == "" {
		// An address-only client needs one absolute finding at
		// AddressBlockScore; several weaker findings never block it.
		// A refused request blocks its address (scope), so it needs the
		// same.
		byAddress := !device || (e.cfg.Scope == "auto" && ev.FailedAuth() && ev.ClientIP.IsValid())
		wantBlock = wantBlock && !e.allow.Load().Allows(ev) &&
			(!byAddress || absoluteScore(s) >= float32(AddressBlockScore))
		// Refusals a blocked device's retries explain never block its
		// address (refusedForBlock).
		withheld = wantBlock && byAddress && e.refusedForBlock(ev)
		wantBlock = wantBlock && !withheld
	} else {
		// An entity without a scope (a tenant: a customer) is never blocked;
		// an allowlisted one neither (checked below, once no block of it is
		// in force: every event of an ongoing attack parses no value).
		wantBlock = wantBlock && ent.Scope != ""
	}
	var scope, value string
	var b block
	if wantBlock {
		scope, value = ent.Scope, ent.Value
		if ent.Kind == "" {
			scope, value = e.scope(ev, s)
		}
		// The scope key in a reused buffer: looking up a block already in
		// force (every event of an ongoing attack) allocates nothing.
		e.keyBuf = append(append(append(e.keyBuf[:0], scope...), 0), value...)
		b = e.blocks[string(e.keyBuf)]
		wantBlock = b.expires <= ev.Time && (ent.Kind == "" || !e.allow.Load().AllowsEntity(ent.Scope, ent.Value))
	}
	if !fresh && !wantBlock && !escalate {
		return nil, nil
	}
	alert := e.alert(ev, s)
	alert.EntityKind, alert.Entity = ent.Kind, ent.Value
	alert.FalseRate = rate * 1000
	alert.Group = alert.ID
	if !fresh && group != 0 {
		alert.Group = "a-" + strconv.FormatUint(group, 16)
		alert.FirstEventID = first
	} else if fresh {
		h := alertHash(alert.ID)
		for i, f := range s.Reasons() {
			if opened[i] {
				k := coolKey{device: ev.DeviceKey, cause: schemas.HashString(f.Reason)}
				c := e.cooled[k]
				c.group, c.first, c.sev = h, ev.ID, rank
				e.cooled[k] = c
			}
		}
	}
	if withheld {
		alert.Reasons = append(alert.Reasons, schemas.Explanation{Detector: detectorDecide, Reason: ReasonBlockedDeviceAddress,
			ObservedLabel: "refused from the address of a blocked device", ExpectedLabel: "an address block"})
	}
	if !wantBlock {
		return alert, nil
	}
	if ok, max := e.allowBlock(ent, ev.Time, ev.ID, alertHash(alert.ID)); !ok {
		alert.Reasons = append(alert.Reasons, schemas.Explanation{Detector: detectorDecide, Reason: ReasonBlockCapHit,
			Observed: float64(max), Expected: float64(max)})
		return alert, nil
	}
	ttl := e.cfg.BlockTTL << min(b.strikes, 16)
	if ttl > e.cfg.MaxBlockTTL || ttl <= 0 {
		ttl = e.cfg.MaxBlockTTL
	}
	b = block{expires: ev.Time + int64(ttl), strikes: b.strikes + 1, device: ev.DeviceKey}
	e.blocks[string(e.keyBuf)] = b
	if !e.cfg.DryRun {
		e.blocked[ev.DeviceKey] = max(e.blocked[ev.DeviceKey], b.expires)
		if ev.ClientIP.IsValid() {
			k := refusedKey(ev)
			e.blocked[k] = max(e.blocked[k], b.expires+int64(RefusalGrace))
		}
	}
	action := schemas.ActionBlock
	if e.cfg.DryRun {
		action = schemas.ActionDryRunBlock
	}
	t := ev.EventTime()
	from := t
	if e.cfg.Now != nil {
		if now := e.cfg.Now(); now.After(from) {
			from = now
		}
	}
	d := &schemas.Decision{
		ID:        idOf(alert.ID, action),
		Action:    action,
		Scope:     scope,
		Value:     value,
		Tenant:    string(ev.Tenant),
		Device:    string(ev.Device),
		CreatedAt: t,
		ExpiresAt: from.Add(ttl),
		Reason:    alert.Reasons[0].Reason,
		Score:     score,
		AlertID:   alert.ID,
		Issuer:    e.cfg.Issuer,
		DryRun:    e.cfg.DryRun,
		SchemaV:   schemas.SchemaVersion,
	}
	return alert, d
}

// ReasonBlockCapHit is added to an alert whose block the per-minute cap
// refused, and is the reason of the fleet alert the first refusal of a minute
// raises (Limiter.AppendAlerts).
const ReasonBlockCapHit = schemas.ReasonBlockCapHit

// ReasonBlockedDeviceAddress is added to an alert whose address block was
// withheld because its refusals are taken for a blocked device's retries
// (refusedForBlock).
const ReasonBlockedDeviceAddress = schemas.ReasonBlockedDeviceAddress

// detectorDecide is the Detector of the reasons the decide stage adds itself.
const detectorDecide = "decide"

func (e *Engine) alert(ev *schemas.Event, s *schemas.Scored) *schemas.Alert {
	a := &schemas.Alert{
		Time:         ev.EventTime(),
		Tenant:       string(ev.Tenant),
		Device:       string(ev.Device),
		APIKey:       string(ev.APIKey),
		Class:        string(ev.Class),
		Command:      string(ev.Command),
		Country:      ev.Country.String(),
		Score:        float64(s.Score),
		Severity:     e.Severity(float64(s.Score)),
		FirstEventID: ev.ID,
		LastEventID:  ev.ID,
		SchemaV:      schemas.SchemaVersion,
	}
	if ev.ClientIP.IsValid() {
		a.ClientIP = ev.ClientIP.String()
	}
	h := ev.DeviceKey ^ ev.ID*0x9e3779b97f4a7c15
	for _, f := range s.Reasons() {
		a.Reasons = append(a.Reasons, schemas.Explain(f))
		h ^= schemas.HashString(f.Reason)
	}
	// Strongest reason first: it names the decision.
	for i := 1; i < len(a.Reasons); i++ {
		for j := i; j > 0 && a.Reasons[j].Score > a.Reasons[j-1].Score; j-- {
			a.Reasons[j], a.Reasons[j-1] = a.Reasons[j-1], a.Reasons[j]
		}
	}
	a.ID = "a-" + strconv.FormatUint(h, 16)
	return a
}

// sevRank orders severities ("" lowest).
func sevRank(sev string) uint8 {
	switch sev {
	case schemas.SeverityLow:
		return 1
	case schemas.SeverityMedium:
		return 2
	case schemas.SeverityHigh:
		return 3
	case schemas.SeverityCritical:
		return 4
	}
	return 0
}

// alertHash is the hash an alert ID ("a-" and hex) spells.
func alertHash(id string) uint64 {
	h, _ := strconv.ParseUint(strings.TrimPrefix(id, "a-"), 16, 64)
	return h
}

func idOf(alertID, action string) string {
	return "d-" + strconv.FormatUint(schemas.HashString(alertID+"/"+action), 16)
}

// scope picks what to block (see Config.Scope). "auto": a request that failed
// authentication blocks its client address (whoever sent it, not the
// identity it claimed); a stolen API key (a geography finding on an event
// carrying a key) blocks the key; anything else blocks the device as its
// source identified it (IdentityScope).
func (e *Engine) scope(ev *schemas.Event, s *schemas.Scored) (string, string) {
	switch e.cfg.Scope {
	case schemas.ScopeAPIKey:
		if len(ev.APIKey) > 0 {
			return schemas.ScopeAPIKey, string(ev.APIKey)
		}
	case schemas.ScopeIP:
		if ev.ClientIP.IsValid() {
			return schemas.ScopeIP, ev.ClientIP.String()
		}
	case schemas.ScopeTenant:
		if len(ev.Tenant) > 0 {
			return schemas.ScopeTenant, string(ev.Tenant)
		}
	case "auto":
		if ev.FailedAuth() && ev.ClientIP.IsValid() {
			// The request was refused: it proves nothing about the identity
			// it claims, so blocking that identity would lock the real
			// device out for an attacker's attempt. Its source is blocked.
			return schemas.ScopeIP, ev.ClientIP.String()
		}
		if len(ev.APIKey) > 0 {
			for _, f := range s.Reasons() {
				if f.Detector == geo.Name {
					return schemas.ScopeAPIKey, string(ev.APIKey)
				}
			}
		}
	}
	return IdentityScope(ev)
}

// IdentityScope returns the decision scope and value that name ev's device
// in the namespace its source identified it in, one that the source's
// enforcement point can match:
//
//	identified by (ev.IDMethod)            scope            value
//	api_key                                api_key          ev.APIKey (the keyed hash, or the gateway's key id)
//	mqtt_username                          mqtt_username    ev.Device
//	mqtt_client_id                         mqtt_client_id   ev.Device
//	client_ip                              ip               the client address
//	certificate, token, header, unknown    device           ev.Device (an HTTP source)
//	                                       mqtt_username    ev.Device (an MQTT source)
//
// A device scope is thus only ever an HTTP gateway's device id (the device
// header or certificate subject an HTTP enforcement point sees), so a block
// of an MQTT client never blocks an HTTP client that sends the same id, nor
// the reverse. An MQTT source identifying clients by certificate or token
// blocks the username, which is what brokers map them to
// (use_identity_as_username in Mosquitto, peer_cert_as_username in EMQX).
func IdentityScope(ev *schemas.Event) (scope, value string) {
	switch ev.IDMethod {
	case schemas.IDAPIKey:
		if len(ev.APIKey) > 0 {
			return schemas.ScopeAPIKey, string(ev.APIKey)
		}
		return schemas.ScopeAPIKey, string(ev.Device)
	case schemas.IDMQTTUsername:
		return schemas.ScopeMQTTUsername, string(ev.Device)
	case schemas.IDMQTTClient:
		return schemas.ScopeMQTTClientID, string(ev.Device)
	case schemas.IDClientIP:
		if ev.ClientIP.IsValid() {
			return schemas.ScopeIP, ev.ClientIP.String()
		}
		return schemas.ScopeIP, string(ev.Device)
	}
	if ev.Protocol == schemas.ProtoMQTT || ev.Source == schemas.SourceBroker {
		return schemas.ScopeMQTTUsername, string(ev.Device)
	}
	return schemas.ScopeDevice, string(ev.Device)
}

// prune drops cool-down and block entries that can no longer matter, at most
// once per event-time minute of the engine's clock (the largest event time
// seen), so the maps stay proportional to active offenders.
func (e *Engine) prune(now int64) {
	if now-e.checked < int64(time.Minute) {
		return
	}
	e.checked = now
	for k, c := range e.cooled {
		if c.prune(now-int64(ReorderWindow)) == 0 {
			delete(e.cooled, k)
		}
	}
	for k, until := range e.blocked {
		if now >= until {
			delete(e.blocked, k)
		}
	}
	for k, b := range e.blocks {
		// Keep expired blocks for a day to remember strikes (escalation).
		if now-b.expires > int64(24*time.Hour) {
			delete(e.blocks, k)
		}
	}
}
