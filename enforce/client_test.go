package enforce

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

const testTimeout = 20 * time.Second

// env is an embedded NATS server with the iotwatch streams and bucket, a
// signing key and the pipeline's publisher.
type env struct {
	ctx   context.Context
	srv   *natsserver.Server
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	pub   *sink.NATSPublisher
	priv  ed25519.PrivateKey
	keys  map[string]ed25519.PublicKey
	clock *fakeClock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	b := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	srv, js, kv := b.Server, b.JS, b.KV
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &env{
		ctx: ctx, srv: srv, js: js, kv: kv, pub: sink.NewNATSPublisher(js, kv, nil),
		priv: priv, keys: map[string]ed25519.PublicKey{"k1": pub},
		clock: newFakeClock(),
	}
}

type fakeClock struct{ t int64 }

// newFakeClock starts at the wall clock's second: the server's per-key TTLs
// follow the wall clock, so a decision valid for an hour of the fake clock
// stays in the bucket while the test runs.
func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Second).UnixNano()} }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, atomic.LoadInt64(&c.t)) }
func (c *fakeClock) Advance(d time.Duration) { atomic.AddInt64(&c.t, int64(d)) }

// decision returns a signed decision valid for an hour of the fake clock.
func (e *env) decision(t *testing.T, id, action, scope, value string) schemas.Decision {
	t.Helper()
	now := e.clock.Now()
	d := schemas.Decision{
		ID: id, Action: action, Scope: scope, Value: value, Tenant: "acme",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Reason: volume.ReasonRateSpike,
		Score: 0.9, Issuer: "test", SchemaV: schemas.SchemaVersion,
	}
	if err := schemas.SignDecision(&d, "k1", e.priv); err != nil {
		t.Fatal(err)
	}
	return d
}

func (e *env) publish(t *testing.T, ds ...schemas.Decision) {
	t.Helper()
	if err := e.pub.PublishDecisions(e.ctx, ds); err != nil {
		t.Fatalf("cannot publish decisions: %v", err)
	}
}

// running is a Client whose Run goroutine the test stops.
type running struct {
	*Client
	stop    func()
	mu      sync.Mutex
	applies map[string]int // "<decision id> <action>" → OnApply calls
}

func (r *running) applyCount(id, action string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applies[id+" "+action]
}

func (e *env) start(t *testing.T, o Options) *running {
	t.Helper()
	r := e.prepare(t, o)
	r.run(t, e)
	return r
}

// prepare makes a client (its state file loaded) without running it.
func (e *env) prepare(t *testing.T, o Options) *running {
	t.Helper()
	r := &running{applies: map[string]int{}}
	if o.EnforcerID == "" {
		o.EnforcerID = "test-enforcer"
	}
	if o.Keys == nil {
		o.Keys = e.keys
	}
	if o.Now == nil {
		o.Now = e.clock.Now
	}
	o.OnApply = func(rc schemas.ApplyReceipt) {
		r.mu.Lock()
		r.applies[rc.DecisionID+" "+rc.Action]++
		r.mu.Unlock()
	}
	c, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r.Client = c
	return r
}

// run starts r's Run goroutine; the test's cleanup stops it.
func (r *running) run(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Client.Run(ctx, e.js) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
}

func (r *running) waitSynced(t *testing.T) {
	t.Helper()
	select {
	case <-r.Synced():
	case <-time.After(testTimeout):
		t.Fatal("client did not sync")
	}
}

// waitFor polls cond until it holds or the test deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// receipts returns every receipt stored in IOTWATCH_DECISIONS.
func (e *env) receipts(t *testing.T) []schemas.ApplyReceipt {
	t.Helper()
	cons, err := e.js.OrderedConsumer(e.ctx, schemas.StreamDecisions, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schemas.SubjectDecisionsApplied},
	})
	if err != nil {
		t.Fatalf("cannot create consumer: %v", err)
	}
	var out []schemas.ApplyReceipt
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			t.Fatalf("cannot fetch receipts: %v", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r schemas.ApplyReceipt
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatalf("bad receipt %s: %v", m.Data(), err)
			}
			out = append(out, r)
		}
		if n == 0 {
			return out
		}
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestSyncWatchUnblockAndReceipts(t *testing.T) {
	e := newEnv(t)
	e.publish(t,
		e.decision(t, "d-dev", schemas.ActionBlock, schemas.ScopeDevice, "dev-1"),
		e.decision(t, "d-net", schemas.ActionBlock, schemas.ScopeIP, "203.0.113.0/24"),
		e.decision(t, "d-thr", schemas.ActionThrottle, schemas.ScopeTenant, "slow-tenant"),
	)
	c := e.start(t, Options{})
	c.waitSynced(t)

	f := func(r Request, action, decision string) {
		t.Helper()
		v := c.Check(r)
		if v.Action != action || v.DecisionID != decision {
			t.Errorf("Check(%+v) = %+v; want action %q decision %q", r, v, action, decision)
		}
	}
	f(Request{Device: "dev-1"}, schemas.ActionBlock, "d-dev")
	f(Request{Device: "dev-2", IP: ip("203.0.113.77")}, schemas.ActionBlock, "d-net")
	f(Request{Device: "dev-2", IP: ip("::ffff:203.0.113.5")}, schemas.ActionBlock, "d-net")
	f(Request{Device: "dev-2", IP: ip("203.0.114.1")}, "", "")
	f(Request{Tenant: "slow-tenant"}, schemas.ActionThrottle, "d-thr")
	f(Request{Tenant: "slow-tenant", Device: "dev-1"}, schemas.ActionBlock, "d-dev") // block wins

	// Watch: a new block, then an unblock.
	e.publish(t, e.decision(t, "d-key", schemas.ActionBlock, schemas.ScopeAPIKey, "key-9"))
	waitFor(t, "api key block", func() bool { return !c.Check(Request{APIKey: "key-9"}).Allowed() })
	e.publish(t, e.decision(t, "u-dev", schemas.ActionUnblock, schemas.ScopeDevice, "dev-1"))
	waitFor(t, "device unblock", func() bool { return c.Check(Request{Device: "dev-1"}).Allowed() })

	// Publishing the same decisions again (a pipeline retry) re-applies nothing.
	e.publish(t, e.decision(t, "d-key", schemas.ActionBlock, schemas.ScopeAPIKey, "key-9"))
	e.publish(t, e.decision(t, "d-probe", schemas.ActionBlock, schemas.ScopeDevice, "probe"))
	waitFor(t, "probe block", func() bool { return !c.Check(Request{Device: "probe"}).Allowed() })

	want := map[string]int{"d-dev block": 1, "d-net block": 1, "d-thr throttle": 1, "d-key block": 1, "d-dev unblock": 1, "d-probe block": 1}
	for k, n := range want {
		id, action, _ := cut(k)
		if got := c.applyCount(id, action); got != n {
			t.Errorf("OnApply %s called %d times; want %d", k, got, n)
		}
	}
	waitFor(t, "receipts published", func() bool { return c.Stats().ReceiptsSent == uint64(len(want)) })
	rs := e.receipts(t)
	if len(rs) != len(want) {
		t.Fatalf("%d receipts stored; want %d: %+v", len(rs), len(want), rs)
	}
	for _, r := range rs {
		if r.EnforcerID != "test-enforcer" || r.KeyID != "k1" || r.AppliedAt.IsZero() || want[r.DecisionID+" "+r.Action] != 1 {
			t.Errorf("unexpected receipt %+v", r)
		}
	}
	st := c.Stats()
	if st.Active != 4 || st.Applied != 5 || st.Removed != 1 {
		t.Errorf("stats %+v; want 4 active, 5 applied, 1 removed", st)
	}
}

func cut(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == ' ' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func TestExpiryHonoured(t *testing.T) {
	e := newEnv(t)
	d := e.decision(t, "d-1", schemas.ActionBlock, schemas.ScopeDevice, "dev-1")
	old := e.decision(t, "d-old", schemas.ActionBlock, schemas.ScopeDevice, "dev-old")
	old.ExpiresAt = e.clock.Now().Add(-time.Second)
	if err := schemas.SignDecision(&old, "k1", e.priv); err != nil {
		t.Fatal(err)
	}
	e.publish(t, d, old)
	c := e.start(t, Options{SweepInterval: time.Hour})
	c.waitSynced(t)
	if c.Check(Request{Device: "dev-1"}).Allowed() {
		t.Fatal("live block not enforced")
	}
	if !c.Check(Request{Device: "dev-old"}).Allowed() {
		t.Fatal("a block that expired before it arrived is enforced")
	}
	if st := c.Stats(); st.Expired != 1 || st.Applied != 1 {
		t.Fatalf("stats %+v; want 1 expired, 1 applied", st)
	}
	e.clock.Advance(time.Hour + time.Nanosecond)
	// Still in the KV bucket, but past ExpiresAt: not enforced, even before a sweep.
	if v := c.Check(Request{Device: "dev-1"}); !v.Allowed() {
		t.Fatalf("expired block still enforced: %+v", v)
	}
	if _, err := e.kv.Get(e.ctx, schemas.KVKey(schemas.ScopeDevice, "dev-1")); err != nil {
		t.Fatalf("the block should still be in the bucket: %v", err)
	}
}

func TestRejectsUnsignedAndTampered(t *testing.T) {
	e := newEnv(t)
	put := func(d schemas.Decision) {
		t.Helper()
		data, _ := json.Marshal(&d)
		if _, err := e.kv.Put(e.ctx, schemas.KVKey(d.Scope, d.Value), data); err != nil {
			t.Fatal(err)
		}
	}
	unsigned := e.decision(t, "u", schemas.ActionBlock, schemas.ScopeDevice, "dev-u")
	unsigned.Signature = ""
	tampered := e.decision(t, "t", schemas.ActionBlock, schemas.ScopeDevice, "dev-t")
	tampered.ExpiresAt = tampered.ExpiresAt.Add(24 * time.Hour)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	unknown := e.decision(t, "k", schemas.ActionBlock, schemas.ScopeDevice, "dev-k")
	if err := schemas.SignDecision(&unknown, "k9", otherPriv); err != nil {
		t.Fatal(err)
	}
	// A valid decision copied under another key is rejected too.
	moved := e.decision(t, "m", schemas.ActionBlock, schemas.ScopeDevice, "dev-m")
	data, _ := json.Marshal(&moved)
	if _, err := e.kv.Put(e.ctx, schemas.KVKey(schemas.ScopeDevice, "victim"), data); err != nil {
		t.Fatal(err)
	}
	put(unsigned)
	put(tampered)

	c := e.start(t, Options{})
	c.waitSynced(t)
	put(unknown)
	e.publish(t, e.decision(t, "ok", schemas.ActionBlock, schemas.ScopeDevice, "dev-ok"))
	waitFor(t, "valid block after rejected ones", func() bool { return !c.Check(Request{Device: "dev-ok"}).Allowed() })
	for _, dev := range []string{"dev-u", "dev-t", "dev-k", "dev-m", "victim"} {
		if v := c.Check(Request{Device: dev}); !v.Allowed() {
			t.Errorf("rejected decision for %q enforced: %+v", dev, v)
		}
	}
	st := c.Stats()
	if st.RejectedUnsigned != 1 || st.RejectedBadSig != 1 || st.RejectedUnknown != 1 || st.RejectedInvalid != 1 || st.Applied != 1 {
		t.Errorf("stats %+v; want one rejection of each kind and 1 applied", st)
	}

	// A tampered rewrite of an enforced decision changes nothing.
	ok := e.decision(t, "ok", schemas.ActionBlock, schemas.ScopeDevice, "dev-ok")
	ok.ExpiresAt = ok.ExpiresAt.Add(-59 * time.Minute)
	put(ok)
	waitFor(t, "tampered rewrite rejected", func() bool { return c.Stats().RejectedBadSig == 2 })
	if v := c.Check(Request{Device: "dev-ok"}); v.Allowed() || !v.ExpiresAt.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("after a tampered rewrite: %+v", v)
	}

	// For tests only: unsigned decisions accepted.
	c2 := e.start(t, Options{EnforcerID: "lenient", AllowUnsigned: true})
	c2.waitSynced(t)
	if c2.Check(Request{Device: "dev-u"}).Allowed() || !c2.Check(Request{Device: "dev-t"}).Allowed() {
		t.Error("AllowUnsigned: want the unsigned decision enforced and the tampered one still rejected")
	}
}

// TestRestartResumes stops a client, changes the bucket while it is down,
// and starts a new client on the same state file: it enforces the saved
// state before it syncs, then catches up without re-applying anything.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t)
	state := filepath.Join(t.TempDir(), "enforce.state")
	e.publish(t, e.decision(t, "a", schemas.ActionBlock, schemas.ScopeDevice, "dev-a"),
		e.decision(t, "c", schemas.ActionBlock, schemas.ScopeIP, "198.51.100.7"))
	c1 := e.start(t, Options{StateFile: state})
	c1.waitSynced(t)
	waitFor(t, "receipts", func() bool { return c1.Stats().ReceiptsSent == 2 })
	c1.stop()

	e.publish(t, e.decision(t, "u-a", schemas.ActionUnblock, schemas.ScopeDevice, "dev-a"),
		e.decision(t, "b", schemas.ActionBlock, schemas.ScopeDevice, "dev-b"))

	// Compact the bucket: the unblock is a value, so it survives and is
	// still noticed.
	if err := e.kv.PurgeDeletes(e.ctx, jetstream.DeleteMarkersOlderThan(-1)); err != nil {
		t.Fatal(err)
	}

	c2 := e.prepare(t, Options{StateFile: state})
	// Before the sync (before Run: a started client may sync at once): the
	// saved state.
	if c2.Check(Request{Device: "dev-a"}).Allowed() || c2.Check(Request{IP: ip("198.51.100.7")}).Allowed() {
		t.Fatal("saved state not enforced at start")
	}
	c2.run(t, e)
	c2.waitSynced(t)
	if !c2.Check(Request{Device: "dev-a"}).Allowed() {
		t.Error("unblock made while down was missed")
	}
	if c2.Check(Request{Device: "dev-b"}).Allowed() || c2.Check(Request{IP: ip("198.51.100.7")}).Allowed() {
		t.Error("block made while down, or kept, not enforced")
	}
	if n := c2.applyCount("c", schemas.ActionBlock); n != 0 {
		t.Errorf("decision c re-applied %d times after restart", n)
	}
	if c2.applyCount("a", schemas.ActionUnblock) != 1 || c2.applyCount("b", schemas.ActionBlock) != 1 {
		t.Errorf("after restart: applies %v; want a unblock and b block once", c2.applies)
	}
	waitFor(t, "receipts", func() bool { return c2.Stats().ReceiptsSent == 2 })
	if rs := e.receipts(t); len(rs) != 4 {
		t.Errorf("%d receipts stored; want 4 (a, c, a unblock, b): %+v", len(rs), rs)
	}
}

// TestReconnect restarts the NATS server under a running client.
func TestReconnect(t *testing.T) {
	dir := t.TempDir()
	first := natstest.Start(t, natsserver.Options{StoreDir: dir})
	nc, js, kv := first.NC, first.JS, first.KV
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	e := &env{ctx: ctx, js: js, kv: kv, pub: sink.NewNATSPublisher(js, kv, nil),
		clock: newFakeClock()}
	pub, priv, _ := ed25519.GenerateKey(nil)
	e.priv, e.keys = priv, map[string]ed25519.PublicKey{"k1": pub}
	e.publish(t, e.decision(t, "a", schemas.ActionBlock, schemas.ScopeDevice, "dev-a"))
	c := e.start(t, Options{})
	c.waitSynced(t)

	port := first.Server.Port()
	first.Server.Shutdown()
	again, err := natsserver.Start(natsserver.Options{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Shutdown()
	waitFor(t, "reconnect", func() bool { return nc.Stats().Reconnects > 0 && nc.IsConnected() })
	if c.Check(Request{Device: "dev-a"}).Allowed() {
		t.Fatal("block lost across a server restart")
	}
	b := []schemas.Decision{e.decision(t, "b", schemas.ActionBlock, schemas.ScopeDevice, "dev-b")}
	waitFor(t, "JetStream after the restart", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return e.pub.PublishDecisions(pctx, b) == nil
	})
	waitFor(t, "block published after the restart", func() bool { return !c.Check(Request{Device: "dev-b"}).Allowed() })
	if c.Stats().Resyncs == 0 {
		t.Error("no resync after the reconnect")
	}
	if n := c.applyCount("a", schemas.ActionBlock); n != 1 {
		t.Errorf("decision a applied %d times; want 1", n)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	if _, err := New(Options{EnforcerID: "x"}); err == nil {
		t.Error("no keys accepted")
	}
	if _, err := New(Options{EnforcerID: "a b", AllowUnsigned: true}); err == nil {
		t.Error("bad enforcer id accepted")
	}
}
