package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// hangBound bounds every wait of these tests (not a speed assertion).
const hangBound = 60 * time.Second

// t0 is the event time the tests start at, on a minute boundary.
var t0 = time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC).UnixNano()

var flood = schemas.Finding{Detector: volume.Name, Reason: volume.ReasonRateSpike, Score: 0.95, Observed: 50, Expected: 1}

// blockWorthy returns an event of device at t0+at from ip, and findings
// that warrant a block.
func blockWorthy(device, ip string, at time.Duration) (*schemas.Event, *schemas.Scored) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(device))
	ev.ClientIP = netip.MustParseAddr(ip)
	ev.Time = t0 + int64(at)
	ev.ID = schemas.HashString(device) ^ uint64(at)
	var s schemas.Scored
	s.Add(flood)
	return &ev, &s
}

// kvOn opens bucket on a connection of its own to env's server: one per
// simulated instance.
func kvOn(t *testing.T, env *natstest.Env, bucket string) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	nc, js, err := bus.Connect(ctx, env.Server.URL(), "iotwatch-instance", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatalf("cannot open bucket %s: %v", bucket, err)
	}
	return kv
}

// engineWith returns a decision engine whose limiter counts with b (nil:
// the local budget), with a cap of max.
func engineWith(t *testing.T, max int, b decide.Budget) (*decide.Engine, *decide.Limiter) {
	t.Helper()
	cfg := decide.DefaultConfig()
	cfg.MaxBlocksPerMinute = max
	lim := decide.NewLimiter(max)
	if b != nil {
		lim = decide.NewBudgetLimiter(max, b)
	}
	e, err := decide.NewEngine(cfg, lim)
	if err != nil {
		t.Fatal(err)
	}
	return e, lim
}

// blocksOfTwo runs two engines side by side, each wanting perEngine blocks
// (one per device) in each of minutes, and returns the blocks decided per
// minute.
func blocksOfTwo(t *testing.T, a, b *decide.Engine, perEngine, minutes int) []int {
	got := make([]int, minutes)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, e := range []*decide.Engine{a, b} {
		wg.Go(func() {
			for m := range minutes {
				for d := range perEngine {
					at := time.Duration(m)*time.Minute + time.Duration(d)*time.Second
					ev, s := blockWorthy(fmt.Sprintf("e%d-m%d-d%d", i, m, d), fmt.Sprintf("192.0.2.%d", i+1), at)
					if _, dec := e.Decide(ev, s); dec != nil {
						mu.Lock()
						got[m]++
						mu.Unlock()
					}
				}
			}
		})
	}
	wg.Wait()
	return got
}

// TestClusterCapTwoEngines: two engines of two instances (connections)
// sharing the blocks budget together decide exactly the cap each minute,
// where two local budgets would decide twice as many.
func TestClusterCapTwoEngines(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	const max, perEngine, minutes = 5, 20, 3
	cfg := cluster.BudgetConfig{Name: schemas.BudgetBlocks, Max: max, Instances: 2}
	ba := cluster.NewKVBudget(kvOn(t, env, schemas.KVBudgets), cfg, nil)
	bb := cluster.NewKVBudget(kvOn(t, env, schemas.KVBudgets), cfg, nil)
	ea, la := engineWith(t, max, ba)
	eb, lb := engineWith(t, max, bb)
	got := blocksOfTwo(t, ea, eb, perEngine, minutes)
	for m, n := range got {
		if n != max {
			t.Errorf("minute %d: %d blocks decided by the two engines, want the cluster cap %d", m, n, max)
		}
	}
	if f := ba.Fallbacks.Load() + bb.Fallbacks.Load(); f != 0 {
		t.Errorf("%d takes answered locally with NATS up", f)
	}
	if d := la.Denied() + lb.Denied(); d != uint64(2*perEngine*minutes-max*minutes) {
		t.Errorf("%d blocks denied, want %d", d, 2*perEngine*minutes-max*minutes)
	}
	t.Logf("revision conflicts: %d", ba.Conflicts.Load()+bb.Conflicts.Load())

	// The same demand with each instance counting alone: twice the cap.
	la2, _ := engineWith(t, max, nil)
	lb2, _ := engineWith(t, max, nil)
	if got := blocksOfTwo(t, la2, lb2, perEngine, 1); got[0] != 2*max {
		t.Fatalf("two local budgets decided %d blocks, want %d (the test no longer shows the difference)", got[0], 2*max)
	}
}

// TestBudgetRedelivery: a take asked again with its token, by another
// instance, is granted again without counting; a full minute refuses new
// tokens.
func TestBudgetRedelivery(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	cfg := cluster.BudgetConfig{Name: "test", Max: 3}
	first := cluster.NewKVBudget(kvOn(t, env, schemas.KVBudgets), cfg, nil)
	const m = 29_000_000
	for tok := range uint64(3) {
		if !first.Take(m, tok+1) {
			t.Fatalf("take %d refused under the cap", tok+1)
		}
	}
	second := cluster.NewKVBudget(kvOn(t, env, schemas.KVBudgets), cfg, nil)
	if !second.Take(m, 2) {
		t.Fatal("a redelivered take (token 2) was refused by another instance")
	}
	if second.Take(m, 4) || first.Take(m, 4) {
		t.Fatal("a fourth token was granted over a cap of 3")
	}
	if !first.Take(m, 3) {
		t.Fatal("a redelivered take (token 3) was refused once the minute was known full")
	}
	if !second.Take(m+1, 4) {
		t.Fatal("the next minute refused its first take")
	}
}

// TestBudgetFallback: with the server gone, takes are answered from the
// local share (cap / instances) within the timeout, one round trip per
// retry interval, and never more than the share per minute.
func TestBudgetFallback(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	cfg := cluster.BudgetConfig{Name: schemas.BudgetBlocks, Max: 10, Instances: 3, Timeout: 300 * time.Millisecond, Retry: time.Hour}
	b := cluster.NewKVBudget(kvOn(t, env, schemas.KVBudgets), cfg, slog.New(slog.DiscardHandler))
	const m = 29_000_000
	if !b.Take(m, 1) || !b.Take(m, 2) {
		t.Fatal("takes refused with the server up")
	}
	env.Server.Shutdown()
	done := make(chan int)
	go func() {
		granted := 0
		for tok := range uint64(100) {
			if b.Take(m, 100+tok) {
				granted++
			}
		}
		for tok := range uint64(100) {
			if b.Take(m+1, 200+tok) {
				granted += 1000
			}
		}
		done <- granted
	}()
	select {
	case granted := <-done:
		// Share 10/3 = 3 a minute: minute m had 2 from the bucket, so 1
		// more; minute m+1 gets 3.
		if want := 1 + 3*1000; granted != want {
			t.Fatalf("granted %d (minute m + 1000 x minute m+1), want %d", granted, want)
		}
	case <-time.After(hangBound):
		t.Fatal("takes blocked with the server gone")
	}
	if f := b.Fallbacks.Load(); f != 200 {
		t.Fatalf("%d takes answered from the local share, want 200", f)
	}
	var metrics strings.Builder
	b.WriteMetrics(&metrics)
	if want := schemas.MetricBudgetLocal + `{budget="blocks"} 200`; !strings.Contains(metrics.String(), want) {
		t.Fatalf("metrics lack %q:\n%s", want, metrics.String())
	}
}

// TestAllowlistBucket: a CIDR put in the shared bucket stops, within the
// hang bound, a block that the same event got before; the instance's own
// entries stay in force; deleting the key brings the block back.
func TestAllowlistBucket(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	admin := kvOn(t, env, schemas.KVAllowlist)
	if _, err := admin.Put(ctx, "bad-entry", []byte("10.0.0.0/33")); err != nil {
		t.Fatal(err)
	}
	e, _ := engineWith(t, 0, nil)
	ref := decide.NewAllowlistRef(nil)
	e.UseAllowlist(ref)
	w := cluster.NewAllowlist(kvOn(t, env, schemas.KVAllowlist), []string{"own-device"}, ref, nil, nil)
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() { errc <- w.Run(ctx, ready) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(hangBound):
		t.Fatal("the allowlist watcher never read the bucket")
	}

	at := time.Duration(0)
	blocks := func(device, ip string) bool {
		at += time.Hour // past every earlier block's TTL and cool-down
		ev, s := blockWorthy(device, ip, at)
		_, d := e.Decide(ev, s)
		return d != nil
	}
	if blocks("own-device", "203.0.113.9") {
		t.Fatal("the instance's own allowlist entry was blocked")
	}
	if !blocks("d-1", "198.51.100.7") {
		t.Fatal("no block before the bucket allowlists the address")
	}
	if _, err := admin.Put(ctx, "office", []byte("# the office's NAT\n198.51.100.0/24\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bucket's CIDR in force", func() bool {
		return ref.Load().Allows(mustEvent("d-1", "198.51.100.7"))
	})
	if blocks("d-1", "198.51.100.7") {
		t.Fatal("blocked an address the bucket allowlists")
	}
	if blocks("own-device", "203.0.113.9") {
		t.Fatal("the instance's own entry was lost when the bucket changed")
	}
	if err := admin.Delete(ctx, "office"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted CIDR out of force", func() bool {
		return !ref.Load().Allows(mustEvent("d-1", "198.51.100.7"))
	})
	if !blocks("d-1", "198.51.100.7") {
		t.Fatal("no block after the bucket's entry was deleted")
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func mustEvent(device, ip string) *schemas.Event {
	ev, _ := blockWorthy(device, ip, 0)
	return ev
}

// waitFor polls cond until it holds, failing the test at hangBound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hangBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
