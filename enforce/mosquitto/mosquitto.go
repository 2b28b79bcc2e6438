// Package mosquitto applies iotwatch's decisions to a Mosquitto 2 broker
// through its dynamic-security plugin: a block of an MQTT username
// (schemas.ScopeMQTTUsername) disables that username (disableClient, which
// also disconnects its clients), and the username is enabled again once no
// active block names it (enableClient). An Enforcer takes the decisions from
// an enforce.Client (its OnApply and OnExpire hooks, with Options.Deferred)
// and reconciles the broker with them; DynSec sends the plugin's commands.
//
// What it acknowledges. Dynamic security manages usernames only: it has no
// command that blocks a client id, an address or a rate. So a block of
// mqtt_username is acknowledged applied once the broker has confirmed
// disableClient (failed, with the broker's words, while it refuses or cannot
// be reached, retried every Config.Retry); every other scope (device,
// api_key, ip, cidr, tenant, and mqtt_client_id) is not_applicable, which
// the enforce.Client acknowledges for scopes outside Scopes(); a throttle is
// not_applicable too. None of them is ever sent to the broker or retried.
package mosquitto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Enforcer turns the enforcement client's active blocks into the set of
// broker usernames that must be disabled, and reconciles the broker with it.
//
// OnApply and OnExpire (the client's watch goroutine) update want and wake
// Run; Run alone talks to the broker and owns owned. A username is enabled
// again only when no active block names it any more.
type Enforcer struct {
	scopes    map[string]bool
	retry     time.Duration
	log       *slog.Logger
	dial      func(context.Context) (*DynSec, error)
	ownedFile string // "" keeps owned in memory only

	report func(schemas.ApplyReceipt)

	mu   sync.Mutex
	want map[string]*pending // KV key → active block in scopes
	wake chan struct{}

	owned map[string]bool // usernames this enforcer disabled (the Run goroutine)

	disabled, enabled, ignoredThrottle, ignoredScope, refused, failures atomic.Uint64
	disconnects                                                         atomic.Uint64
	connected                                                           atomic.Bool

	ds       *DynSec   // the connection Start opened, for Run
	lastWarn time.Time // of the last connection warning (Run's goroutine)
	quiet    int       // connection warnings suppressed since lastWarn
}

// pending is an active block of a username and what was reported of it.
type pending struct {
	user     string
	r        schemas.ApplyReceipt // the client's receipt (Result empty): decision, scope, value, key id
	reported string               // result reported so far: "", failed or applied
}

// Scopes returns the decision scopes an Enforcer applies by default:
// mqtt_username. Give them to the enforce.Client as Options.Scopes, so that
// it acknowledges every other scope as not_applicable.
func Scopes() []string { return []string{schemas.ScopeMQTTUsername} }

// Stats are the enforcer's counters.
type Stats struct {
	Disabled, Enabled             uint64 // dynamic-security commands the broker carried out
	IgnoredThrottle, IgnoredScope uint64 // decisions dynamic security cannot apply
	Refused                       uint64 // commands the broker refused (such as an unknown username)
	Failures                      uint64 // connection or transport failures
	Disconnects                   uint64 // connections to the broker lost after they were up
	Connected                     bool   // a connection to the broker is up
}

// Config is what New needs.
type Config struct {
	// Scopes are the decision scopes whose value is a broker username: nil
	// means Scopes() (mqtt_username). schemas.ScopeDevice may be added where
	// HTTP device ids and MQTT usernames are deliberately the same identity.
	// Decisions of other scopes are counted and ignored (the enforce.Client,
	// given the same scopes, acknowledges them as not_applicable).
	Scopes map[string]bool
	// Report publishes the outcome of each block (enforce.Client.Report):
	// applied once the broker disabled the username, failed (once) while it
	// refuses or cannot be reached, not_applicable for a throttle. Nil
	// reports nothing.
	Report func(schemas.ApplyReceipt)
	// Retry is how soon a refused or failed command is tried again (> 0).
	Retry time.Duration
	Log   *slog.Logger
	// Dial connects to the broker's dynamic-security plugin (DialDynSec);
	// Run calls it again after a connection is lost.
	Dial func(context.Context) (*DynSec, error)
	// OwnedFile keeps the usernames this enforcer disabled across restarts,
	// so that blocks lifted while it was down are lifted at start; "" keeps
	// them in memory only.
	OwnedFile string
}

// New returns an Enforcer that disables nothing yet, with the usernames it
// disabled before if cfg.OwnedFile holds them.
func New(cfg Config) (*Enforcer, error) {
	if cfg.Retry <= 0 {
		return nil, fmt.Errorf("cannot use retry %s: want > 0", cfg.Retry)
	}
	if cfg.Scopes == nil {
		cfg.Scopes = map[string]bool{}
		for _, s := range Scopes() {
			cfg.Scopes[s] = true
		}
	}
	if cfg.Report == nil {
		cfg.Report = func(schemas.ApplyReceipt) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	m := &Enforcer{scopes: cfg.Scopes, retry: cfg.Retry, log: cfg.Log, dial: cfg.Dial, ownedFile: cfg.OwnedFile,
		report: cfg.Report, want: map[string]*pending{}, wake: make(chan struct{}, 1), owned: map[string]bool{}}
	if m.ownedFile != "" {
		if err := m.loadOwned(); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Stats returns the enforcer's counters.
func (m *Enforcer) Stats() Stats {
	return Stats{Disabled: m.disabled.Load(), Enabled: m.enabled.Load(), IgnoredThrottle: m.ignoredThrottle.Load(),
		IgnoredScope: m.ignoredScope.Load(), Refused: m.refused.Load(), Failures: m.failures.Load(),
		Disconnects: m.disconnects.Load(), Connected: m.connected.Load()}
}

// startCheck is the dynamic-security command Start runs to prove the
// connection works: it needs the plugin and the admin role, and changes
// nothing.
var startCheck = DynSecCommand{Command: "getDefaultACLAccess"}

// Start connects to the broker and runs a first, read-only dynamic-security
// command, so that a broker that is down, a wrong password, a user without
// the plugin's admin role or a broker without the plugin fails at start-up
// with an error that says which; the connection is kept for Run. Call it
// once, before Run.
func (m *Enforcer) Start(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := m.dial(cctx)
	if err != nil {
		return fmt.Errorf("cannot start the mosquitto enforcer: %w", err)
	}
	if err := d.Exec(cctx, startCheck); err != nil {
		d.Close()
		return fmt.Errorf("cannot start the mosquitto enforcer: %w (the user needs the dynamic-security admin role, and the broker the plugin)", err)
	}
	m.ds = d
	m.connected.Store(true)
	return nil
}

// connWarnEvery rate-limits the enforcer's connection warnings.
const connWarnEvery = time.Minute

// warnConn logs a connection warning, at most one per connWarnEvery; the
// next one says how many were suppressed.
func (m *Enforcer) warnConn(msg string, args ...any) {
	if now := time.Now(); now.Sub(m.lastWarn) >= connWarnEvery {
		m.lastWarn = now
		if m.quiet > 0 {
			args = append(args, "suppressed", m.quiet)
		}
		m.quiet = 0
		m.log.Warn(msg, args...)
		return
	}
	m.quiet++
}

// WriteMetrics writes the enforcer's counters in the Prometheus text format.
func (m *Enforcer) WriteMetrics(w io.Writer) {
	st := m.Stats()
	connected := 0
	if st.Connected {
		connected = 1
	}
	fmt.Fprintf(w, "# TYPE %s gauge\n%s %d\n", schemas.MetricMosquittoConnected, schemas.MetricMosquittoConnected, connected)
	fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", schemas.MetricMosquittoDisconnects, schemas.MetricMosquittoDisconnects, st.Disconnects)
	fmt.Fprintf(w, "# TYPE %s counter\n", schemas.MetricMosquittoCommands)
	for _, r := range []struct {
		result string
		n      uint64
	}{{"disabled", st.Disabled}, {"enabled", st.Enabled}, {"refused", st.Refused}, {"failed", st.Failures}} {
		fmt.Fprintf(w, "%s{result=%q} %d\n", schemas.MetricMosquittoCommands, r.result, r.n)
	}
}

// Seed adds the active blocks the client enforces before Run (its state
// file). Their outcome is reported again once the broker confirms it (a
// receipt sent before the restart is then a duplicate, which the stream and
// the receipts table drop).
func (m *Enforcer) Seed(active []schemas.Decision) {
	for _, d := range active {
		m.set(schemas.ApplyReceipt{DecisionID: d.ID, Action: d.Action, Scope: d.Scope, Value: d.Value,
			KeyID: schemas.SignatureKeyID(&d)})
	}
}

// OnApply is the client's OnApply hook (enforce.Options); it does not block.
func (m *Enforcer) OnApply(r schemas.ApplyReceipt) { m.set(r) }

// OnExpire is the client's OnExpire hook (enforce.Options); it does not block.
func (m *Enforcer) OnExpire(d schemas.Decision) {
	m.set(schemas.ApplyReceipt{DecisionID: d.ID, Action: schemas.ActionUnblock, Scope: d.Scope, Value: d.Value})
}

// set records that the KV key of r's scope and value now holds r's action.
func (m *Enforcer) set(r schemas.ApplyReceipt) {
	key := schemas.KVKey(r.Scope, r.Value)
	m.mu.Lock()
	switch {
	case r.Action == schemas.ActionUnblock:
		delete(m.want, key)
	case r.Result == schemas.ReceiptNotApplicable:
		// The client acknowledged it: a scope outside its Options.Scopes.
	case !m.scopes[r.Scope]:
		m.ignoredScope.Add(1)
	case r.Action == schemas.ActionThrottle:
		m.ignoredThrottle.Add(1)
		delete(m.want, key) // a throttle replacing a block under the same key lifts it
		r.Result, r.Reason = schemas.ReceiptNotApplicable, schemas.ReceiptReasonAction
		r.Detail = "Mosquitto's dynamic security cannot rate-limit a client"
		r.AppliedAt = time.Time{}
		m.report(r)
	case r.Action == schemas.ActionBlock:
		r.Result, r.Reason, r.Detail = "", "", ""
		m.want[key] = &pending{user: r.Value, r: r}
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// target returns the usernames that must be disabled.
func (m *Enforcer) target() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.want))
	for _, p := range m.want {
		out[p.user] = true
	}
	return out
}

// acknowledge reports each active block's outcome once it is known and new:
// applied when its username is disabled (owned), else failed with the
// broker's refusal of the username, or with unreachable when the broker
// could not be asked (down == nil: it could be).
func (m *Enforcer) acknowledge(refused map[string]error, down error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.want {
		r := p.r
		switch {
		case p.reported == schemas.ReceiptApplied:
			continue
		case m.owned[p.user]:
			r.Result = schemas.ReceiptApplied
		case p.reported == schemas.ReceiptFailed:
			continue
		case refused[p.user] != nil:
			r.Result, r.Reason, r.Detail = schemas.ReceiptFailed, schemas.ReceiptReasonRefused, refused[p.user].Error()
		case down != nil:
			r.Result, r.Reason, r.Detail = schemas.ReceiptFailed, schemas.ReceiptReasonUnreachable, down.Error()
		default:
			continue
		}
		p.reported = r.Result
		m.report(r)
	}
}

// Run reconciles the broker with the target set whenever it changes, and
// every Config.Retry after a failure, until ctx is done.
//
// A lost connection is noticed at once, counted (Stats.Disconnects), logged
// (at most once a minute) and re-established every Config.Retry until it is
// back, whether or not commands are pending.
func (m *Enforcer) Run(ctx context.Context) {
	ds := m.ds
	m.ds = nil
	defer func() {
		if ds != nil {
			ds.Close()
		}
		m.connected.Store(false)
	}()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		var lost <-chan struct{}
		if ds != nil {
			lost = ds.Done()
		}
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-retry.C:
		case <-lost:
		}
		if ds != nil {
			select {
			case <-ds.Done():
				m.disconnects.Add(1)
				m.connected.Store(false)
				m.warnConn("mosquitto connection lost, reconnecting", "err", ds.Err(), "retry", m.retry)
				ds = nil
			default:
			}
		}
		ok := m.reconcile(ctx, &ds)
		m.connected.Store(ds != nil)
		if !ok && ctx.Err() == nil {
			retry.Reset(m.retry)
		}
	}
}

// reconcile sends the commands that bring the broker to the target set and
// reports whether nothing is left to retry.
func (m *Enforcer) reconcile(ctx context.Context, ds **DynSec) bool {
	want := m.target()
	var cmds []DynSecCommand
	for _, u := range slices.Sorted(maps.Keys(want)) {
		if !m.owned[u] {
			cmds = append(cmds, DynSecCommand{Command: "disableClient", Username: u})
		}
	}
	for _, u := range slices.Sorted(maps.Keys(m.owned)) {
		if !want[u] {
			cmds = append(cmds, DynSecCommand{Command: "enableClient", Username: u})
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if *ds == nil {
		d, err := m.dial(cctx)
		if err != nil {
			if ctx.Err() == nil {
				m.failures.Add(1)
				m.warnConn("cannot connect to mosquitto, retrying", "err", err, "pending", len(cmds), "retry", m.retry)
				m.acknowledge(nil, err)
			}
			return false
		}
		*ds = d
		if m.disconnects.Load() > 0 || m.failures.Load() > 0 {
			m.log.Info("mosquitto connection re-established")
		}
	}
	if len(cmds) == 0 {
		m.acknowledge(nil, nil)
		return true
	}
	errs, err := (*ds).ExecEach(cctx, cmds...)
	if err != nil {
		if ctx.Err() == nil {
			m.failures.Add(1)
			m.warnConn("cannot send dynamic-security commands, retrying", "err", err, "pending", len(cmds), "retry", m.retry)
			m.acknowledge(nil, err)
		}
		(*ds).Close()
		*ds = nil
		return false
	}
	done := true
	var refused map[string]error
	for i, c := range cmds {
		var de *DynSecError
		switch {
		case errs[i] == nil && c.Command == "disableClient":
			m.owned[c.Username] = true
			m.disabled.Add(1)
			m.log.Info("mosquitto client disabled", "username", c.Username)
		case errs[i] == nil:
			delete(m.owned, c.Username)
			m.enabled.Add(1)
			m.log.Info("mosquitto client enabled", "username", c.Username)
		case c.Command == "enableClient" && errors.As(errs[i], &de):
			delete(m.owned, c.Username) // gone from the broker: nothing left to undo
			m.refused.Add(1)
			m.log.Warn("mosquitto refused enableClient", "username", c.Username, "err", errs[i])
		default:
			m.refused.Add(1)
			done = false
			if refused == nil {
				refused = map[string]error{}
			}
			refused[c.Username] = errs[i]
			m.log.Warn("mosquitto refused disableClient, retrying", "username", c.Username, "err", errs[i])
		}
	}
	if m.ownedFile != "" {
		if err := m.saveOwned(); err != nil {
			m.log.Error("cannot save disabled usernames", "path", m.ownedFile, "err", err)
		}
	}
	m.acknowledge(refused, nil)
	return done
}

// ownedState is the JSON of Config.OwnedFile.
type ownedState struct {
	V        int      `json:"v"`
	Disabled []string `json:"disabled"`
}

func (m *Enforcer) loadOwned() error {
	data, err := os.ReadFile(m.ownedFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read disabled usernames: %w", err)
	}
	var st ownedState
	if err := json.Unmarshal(data, &st); err != nil || st.V != 1 {
		return fmt.Errorf("cannot load disabled usernames %q: version %d, error %v (delete the file to start afresh)", m.ownedFile, st.V, err)
	}
	for _, u := range st.Disabled {
		m.owned[u] = true
	}
	return nil
}

// saveOwned writes owned atomically (temporary file, then rename).
func (m *Enforcer) saveOwned() error {
	data, _ := json.Marshal(ownedState{V: 1, Disabled: append([]string{}, slices.Sorted(maps.Keys(m.owned))...)})
	tmp, err := os.CreateTemp(filepath.Dir(m.ownedFile), ".dynsec-*")
	if err != nil {
		return fmt.Errorf("cannot save disabled usernames: %w", err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), m.ownedFile)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cannot save disabled usernames %q: %w", m.ownedFile, err)
	}
	return nil
}
