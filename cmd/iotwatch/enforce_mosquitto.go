package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
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

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/schemas"
)

// enforceMosquittoOptions are the flags of `enforce mosquitto`.
type enforceMosquittoOptions struct {
	enforcerFlags
	broker       string
	username     string
	passwordFile string
	clientID     string
	scopes       string
	retry        time.Duration
}

func enforceMosquittoCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("enforce mosquitto", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o enforceMosquittoOptions
	o.register(fs, "mosquitto-", "file keeping the active decisions across restarts; FILE.dynsec then keeps the usernames this enforcer disabled, so that blocks lifted while it was down are lifted at start; empty: start empty")
	fs.StringVar(&o.broker, "broker", "127.0.0.1:1883", "Mosquitto broker address host:port (plain TCP listener with the dynamic-security plugin)")
	fs.StringVar(&o.username, "username", "", "dynamic-security admin user to connect as (needs publish on $CONTROL/dynamic-security/# and subscribe to its response topic, as the role mosquitto_ctrl dynsec init creates); required")
	fs.StringVar(&o.passwordFile, "password-file", "", "file holding that user's password (first line); required")
	fs.StringVar(&o.clientID, "client-id", "", "MQTT client id of this enforcer; empty: iotwatch-<enforcer-id>")
	fs.StringVar(&o.scopes, "scopes", schemas.ScopeDevice+","+schemas.ScopeAPIKey, "decision scopes whose value is a broker username, comma-separated (device, api_key)")
	fs.DurationVar(&o.retry, "retry", 10*time.Second, "how soon a refused or failed dynamic-security command is tried again")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch enforce mosquitto --broker HOST:PORT --username ADMIN --password-file FILE --keys FILE[,FILE] [flags]

Applies iotwatch decisions to a Mosquitto 2 broker through its dynamic-security
plugin. It keeps a verified copy of the active decisions in KV bucket %[1]s
(initial sync, then watch; ed25519 signatures checked against --keys) and
publishes commands on %[2]s:

  block of a device or api_key scope (see --scopes)
        disableClient <value>: the broker refuses the username's connections
        and disconnects its connected clients
  unblock (KV delete), expiry (expires_at; found within a second)
        enableClient <value>, once no other active block names that username

The decision's value is taken as the broker username: dynamic security disables
usernames, not client ids, so configure the Mosquitto log source to identify
devices by username. Decisions of scope ip or tenant, and throttles (dynamic
security cannot rate-limit), are counted and ignored. Each applied decision is
acknowledged with a receipt on %[3]s. Commands the broker refuses (an unknown
username) or cannot receive (broker down) are retried every --retry; the
connection to the broker is re-established as needed.

Flags:
`, schemas.KVActiveBlocks, mqtt.DynSecTopic, schemas.SubjectDecisionsApplied)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	if o.username == "" || o.passwordFile == "" {
		return usageError{errors.New("cannot enforce: --username and --password-file are required")}
	}
	pw, err := os.ReadFile(o.passwordFile)
	if err != nil {
		return usageError{fmt.Errorf("cannot read --password-file: %w", err)}
	}
	if i := bytes.IndexByte(pw, '\n'); i >= 0 {
		pw = pw[:i]
	}
	pw = bytes.TrimRight(pw, "\r")
	copts, log, err := o.clientOptions()
	if err != nil {
		return err
	}
	scopes := map[string]bool{}
	for _, s := range splitList(o.scopes) {
		if s != schemas.ScopeDevice && s != schemas.ScopeAPIKey {
			return usageError{fmt.Errorf("cannot use --scopes %q: scope %q is not device or api_key", o.scopes, s)}
		}
		scopes[s] = true
	}
	if o.retry <= 0 {
		return usageError{fmt.Errorf("cannot use --retry %s: want > 0", o.retry)}
	}
	if o.clientID == "" {
		o.clientID = "iotwatch-" + o.enforcerID
	}
	m := newDynsecEnforcer(scopes, o.retry, log)
	if o.stateFile != "" {
		m.ownedFile = o.stateFile + ".dynsec"
		if err := m.loadOwned(); err != nil {
			return err
		}
	}
	mopts := mqtt.Options{Addr: o.broker, ClientID: o.clientID, Username: o.username, Password: string(pw)}
	m.dial = func(ctx context.Context) (*mqtt.DynSec, error) { return mqtt.DialDynSec(ctx, mopts) }

	copts.OnApply, copts.OnExpire = m.onApply, m.onExpire
	client, err := enforce.New(copts)
	if err != nil {
		return err
	}
	m.seed(client.Active())
	log.Info("enforce mosquitto started", "broker", o.broker, "enforcer", o.enforcerID, "keys", len(copts.Keys))
	fmt.Fprintf(stdout, "iotwatch enforce mosquitto: broker %s\n", o.broker)

	var wg sync.WaitGroup
	wg.Go(func() {
		o.runClient(ctx, client, log)
	})
	m.run(ctx)
	wg.Wait()
	st, ms := client.Stats(), m.stats()
	log.Info("enforce mosquitto stopped", "active", st.Active, "applied", st.Applied, "removed", st.Removed, "receipts", st.ReceiptsSent,
		"disabled", ms.Disabled, "enabled", ms.Enabled, "ignored_throttle", ms.IgnoredThrottle, "ignored_scope", ms.IgnoredScope, "refused", ms.Refused)
	return nil
}

// dynsecEnforcer turns the enforcement client's active blocks into the set of
// broker usernames that must be disabled, and reconciles the broker with it.
//
// onApply and onExpire (the client's watch goroutine) update want and wake
// run; run alone talks to the broker and owns owned. A username is enabled
// again only when no active block names it any more.
type dynsecEnforcer struct {
	scopes    map[string]bool
	retry     time.Duration
	log       *slog.Logger
	dial      func(context.Context) (*mqtt.DynSec, error)
	ownedFile string // "" keeps owned in memory only

	mu   sync.Mutex
	want map[string]string // KV key → username, for active blocks in scopes
	wake chan struct{}

	owned map[string]bool // usernames this enforcer disabled (run goroutine)

	disabled, enabled, ignoredThrottle, ignoredScope, refused, failures atomic.Uint64
}

// dynsecStats are the enforcer's counters.
type dynsecStats struct {
	Disabled, Enabled             uint64 // dynamic-security commands the broker carried out
	IgnoredThrottle, IgnoredScope uint64 // decisions dynamic security cannot apply
	Refused                       uint64 // commands the broker refused (such as an unknown username)
	Failures                      uint64 // connection or transport failures
}

func newDynsecEnforcer(scopes map[string]bool, retry time.Duration, log *slog.Logger) *dynsecEnforcer {
	return &dynsecEnforcer{scopes: scopes, retry: retry, log: log, want: map[string]string{}, wake: make(chan struct{}, 1), owned: map[string]bool{}}
}

func (m *dynsecEnforcer) stats() dynsecStats {
	return dynsecStats{Disabled: m.disabled.Load(), Enabled: m.enabled.Load(), IgnoredThrottle: m.ignoredThrottle.Load(),
		IgnoredScope: m.ignoredScope.Load(), Refused: m.refused.Load(), Failures: m.failures.Load()}
}

// seed adds the active blocks the client enforces before Run (its state file).
func (m *dynsecEnforcer) seed(active []schemas.Decision) {
	for _, d := range active {
		m.set(d.Action, d.Scope, d.Value)
	}
}

// onApply is the client's OnApply hook; it must not block.
func (m *dynsecEnforcer) onApply(r schemas.ApplyReceipt) { m.set(r.Action, r.Scope, r.Value) }

// onExpire is the client's OnExpire hook; it must not block.
func (m *dynsecEnforcer) onExpire(d schemas.Decision) { m.set(schemas.ActionUnblock, d.Scope, d.Value) }

// set records that the KV key of (scope, value) now holds action.
func (m *dynsecEnforcer) set(action, scope, value string) {
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
func (m *dynsecEnforcer) target() map[string]bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]bool, len(m.want))
	for _, u := range m.want {
		out[u] = true
	}
	return out
}

// run reconciles the broker with the target set whenever it changes, and
// every --retry after a failure, until ctx is done.
func (m *dynsecEnforcer) run(ctx context.Context) {
	var ds *mqtt.DynSec
	defer func() {
		if ds != nil {
			ds.Close()
		}
	}()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-retry.C:
		}
		if ds != nil {
			select {
			case <-ds.Done():
				m.log.Warn("mosquitto connection lost", "err", ds.Err())
				ds = nil
			default:
			}
		}
		ok := m.reconcile(ctx, &ds)
		if !ok && ctx.Err() == nil {
			retry.Reset(m.retry)
		}
	}
}

// reconcile sends the commands that bring the broker to the target set and
// reports whether nothing is left to retry.
func (m *dynsecEnforcer) reconcile(ctx context.Context, ds **mqtt.DynSec) bool {
	want := m.target()
	var cmds []mqtt.DynSecCommand
	for _, u := range slices.Sorted(maps.Keys(want)) {
		if !m.owned[u] {
			cmds = append(cmds, mqtt.DynSecCommand{Command: "disableClient", Username: u})
		}
	}
	for _, u := range slices.Sorted(maps.Keys(m.owned)) {
		if !want[u] {
			cmds = append(cmds, mqtt.DynSecCommand{Command: "enableClient", Username: u})
		}
	}
	if len(cmds) == 0 {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if *ds == nil {
		d, err := m.dial(cctx)
		if err != nil {
			if ctx.Err() == nil {
				m.failures.Add(1)
				m.log.Warn("cannot connect to mosquitto, retrying", "err", err, "pending", len(cmds))
			}
			return false
		}
		*ds = d
	}
	errs, err := (*ds).ExecEach(cctx, cmds...)
	if err != nil {
		if ctx.Err() == nil {
			m.failures.Add(1)
			m.log.Warn("cannot send dynamic-security commands, retrying", "err", err, "pending", len(cmds))
		}
		(*ds).Close()
		*ds = nil
		return false
	}
	done := true
	for i, c := range cmds {
		var de *mqtt.DynSecError
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

// ownedState is the JSON of the --state FILE.dynsec file.
type ownedState struct {
	V        int      `json:"v"`
	Disabled []string `json:"disabled"`
}

func (m *dynsecEnforcer) loadOwned() error {
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
func (m *dynsecEnforcer) saveOwned() error {
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
