// Package mosquitto applies iotwatch's decisions to a Mosquitto 2 broker
// through its dynamic-security plugin: a block of a device or API key
// disables the broker username its value names (disableClient), and the
// username is enabled again once no active block names it (enableClient).
// An Enforcer takes the decisions from an enforce.Client (its OnApply and
// OnExpire hooks) and reconciles the broker with them; DynSec sends the
// plugin's commands.
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

	mu   sync.Mutex
	want map[string]string // KV key → username, for active blocks in scopes
	wake chan struct{}

	owned map[string]bool // usernames this enforcer disabled (the Run goroutine)

	disabled, enabled, ignoredThrottle, ignoredScope, refused, failures atomic.Uint64
	disconnects                                                         atomic.Uint64
	connected                                                           atomic.Bool

	ds       *DynSec   // the connection Start opened, for Run
	lastWarn time.Time // of the last connection warning (Run's goroutine)
	quiet    int       // connection warnings suppressed since lastWarn
}

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
	// Scopes are the decision scopes whose value is a broker username
	// (schemas.ScopeDevice, schemas.ScopeAPIKey); decisions of other scopes
	// are counted and ignored.
	Scopes map[string]bool
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
	m := &Enforcer{scopes: cfg.Scopes, retry: cfg.Retry, log: cfg.Log, dial: cfg.Dial, ownedFile: cfg.OwnedFile,
		want: map[string]string{}, wake: make(chan struct{}, 1), owned: map[string]bool{}}
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

// Seed adds the active blocks the client enforces before Run (its state file).
func (m *Enforcer) Seed(active []schemas.Decision) {
	for _, d := range active {
		m.set(d.Action, d.Scope, d.Value)
	}
}

// OnApply is the client's OnApply hook (enforce.Options); it does not block.
func (m *Enforcer) OnApply(r schemas.ApplyReceipt) { m.set(r.Action, r.Scope, r.Value) }

// OnExpire is the client's OnExpire hook (enforce.Options); it does not block.
func (m *Enforcer) OnExpire(d schemas.Decision) { m.set(schemas.ActionUnblock, d.Scope, d.Value) }

// set records that the KV key of (scope, value) now holds action.
func (m *Enforcer) set(action, scope, value string) {
	key := schemas.KVKey(scope, value)
	m.mu.Lock()
	switch {
	case !m.scopes[scope]:
		if action != schemas.ActionUnblock {
			m.ignoredScope.Add(1)
		}
	case action == schemas.ActionBlock:
		m.want[key] = value
	case action == schemas.ActionThrottle:
		m.ignoredThrottle.Add(1)
		delete(m.want, key) // a throttle replacing a block under the same key lifts it
	default:
		delete(m.want, key)
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
	for _, u := range m.want {
		out[u] = true
	}
	return out
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
			}
			return false
		}
		*ds = d
		if m.disconnects.Load() > 0 || m.failures.Load() > 0 {
			m.log.Info("mosquitto connection re-established")
		}
	}
	if len(cmds) == 0 {
		return true
	}
	errs, err := (*ds).ExecEach(cctx, cmds...)
	if err != nil {
		if ctx.Err() == nil {
			m.failures.Add(1)
			m.warnConn("cannot send dynamic-security commands, retrying", "err", err, "pending", len(cmds), "retry", m.retry)
		}
		(*ds).Close()
		*ds = nil
		return false
	}
	done := true
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
			m.log.Warn("mosquitto refused disableClient, retrying", "username", c.Username, "err", errs[i])
		}
	}
	if m.ownedFile != "" {
		if err := m.saveOwned(); err != nil {
			m.log.Error("cannot save disabled usernames", "path", m.ownedFile, "err", err)
		}
	}
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
