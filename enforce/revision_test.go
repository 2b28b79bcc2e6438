package enforce

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/enforce/unblock"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// revEnv is env with the publishers of the two processes that sign
// decisions: the pipeline (key k1, through a signing publisher, as
// `iotwatch run` does) and a SOC analyst's `iotwatch unblock` (key soc-1).
type revEnv struct {
	*env
	pipeline *sink.NATSPublisher
	socPriv  ed25519.PrivateKey
}

func newRevEnv(t *testing.T) *revEnv {
	t.Helper()
	e := newEnv(t)
	socPub, socPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.keys["soc-1"] = socPub
	p := sink.NewNATSPublisher(e.js, e.kv, nil)
	if err := p.SetSigner("k1", e.priv); err != nil {
		t.Fatal(err)
	}
	return &revEnv{env: e, pipeline: p, socPriv: socPriv}
}

// block publishes a block decided by the pipeline (signed as the pipeline
// signs it; the publisher gives it its revision and signs it again) and
// returns it as published.
func (e *revEnv) block(t *testing.T, id, value string) schemas.Decision {
	t.Helper()
	now := e.clock.Now()
	ds := []schemas.Decision{{ID: id, Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: value, Tenant: "acme",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "rate_spike", Score: 0.9, Issuer: "pipeline", SchemaV: schemas.SchemaVersion}}
	if err := schemas.SignDecision(&ds[0], "k1", e.priv); err != nil {
		t.Fatal(err)
	}
	if err := e.pipeline.PublishDecisions(e.ctx, ds); err != nil {
		t.Fatal(err)
	}
	return ds[0]
}

// unblock lifts value as an analyst does and returns the unblock.
func (e *revEnv) unblock(t *testing.T, value string) schemas.Decision {
	t.Helper()
	res, err := unblock.Lift(e.ctx, e.js, e.kv, unblock.Request{Scope: schemas.ScopeDevice, Value: value, Reason: "ticket",
		Issuer: "alice", KeyID: "soc-1", Key: e.socPriv, Now: e.clock.Now()}, nil)
	if err != nil || !res.Published {
		t.Fatalf("unblock of %q: %+v, %v", value, res, err)
	}
	return res.Unblock
}

// rawValue returns the KV value under value's device key.
func (e *revEnv) rawValue(t *testing.T, value string) []byte {
	t.Helper()
	kve, err := e.kv.Get(e.ctx, schemas.KVKey(schemas.ScopeDevice, value))
	if err != nil {
		t.Fatal(err)
	}
	return kve.Value()
}

func (e *revEnv) put(t *testing.T, value string, raw []byte) {
	t.Helper()
	if _, err := e.kv.Put(e.ctx, schemas.KVKey(schemas.ScopeDevice, value), raw); err != nil {
		t.Fatal(err)
	}
}

// TestReplayedBlockAfterUnblock: replaying an old signed block into the
// bucket after an analyst's unblock (or after a newer block) is rejected as
// stale, whatever the clocks of the two signers say; a new block from the
// pipeline after the unblock is applied.
func TestReplayedBlockAfterUnblock(t *testing.T) {
	e := newRevEnv(t)
	b1 := e.block(t, "d-1", "dev-1")
	if b1.Revision == 0 {
		t.Fatalf("block published without a revision: %+v", b1)
	}
	old := e.rawValue(t, "dev-1")
	c := e.start(t, Options{})
	c.waitSynced(t)
	if v := c.Check(Request{Device: "dev-1"}); v.DecisionID != "d-1" {
		t.Fatalf("before the unblock: %+v; want d-1", v)
	}
	e.clock.Advance(time.Minute)
	u := e.unblock(t, "dev-1")
	if u.Revision <= b1.Revision {
		t.Errorf("unblock revision %d; want above the block's %d", u.Revision, b1.Revision)
	}
	waitFor(t, "the unblock", func() bool { return c.Check(Request{Device: "dev-1"}).Allowed() })

	e.put(t, "dev-1", old) // the attacker's replay of the signed block
	waitFor(t, "the replay rejected", func() bool { return c.Stats().RejectedStale == 1 })
	if v := c.Check(Request{Device: "dev-1"}); !v.Allowed() {
		t.Fatalf("after replaying the old block: %+v; want allowed", v)
	}
	if n := c.applyCount("d-1", schemas.ActionBlock); n != 1 {
		t.Errorf("%d block receipts for d-1; want 1", n)
	}

	// The pipeline blocks the device again: a newer revision than the
	// unblock's even if the pipeline's clock were behind the analyst's.
	e.clock.Advance(time.Minute)
	b2 := e.block(t, "d-2", "dev-1")
	if b2.Revision <= u.Revision {
		t.Errorf("second block revision %d; want above the unblock's %d", b2.Revision, u.Revision)
	}
	waitFor(t, "the second block", func() bool { return c.Check(Request{Device: "dev-1"}).DecisionID == "d-2" })
	second := e.rawValue(t, "dev-1")

	// The old unblock replayed cannot lift the newer block, nor the old block replace it.
	e.put(t, "dev-1", old)
	waitFor(t, "the old block rejected again", func() bool { return c.Stats().RejectedStale == 2 })
	if v := c.Check(Request{Device: "dev-1"}); v.DecisionID != "d-2" {
		t.Fatalf("after replaying the first block over the second: %+v; want d-2", v)
	}
	// The same value written again (a resync, a retry) is not stale.
	e.put(t, "dev-1", second)
	waitFor(t, "the rewrite seen", func() bool { return c.Stats().Revision >= 0 && c.Check(Request{Device: "dev-1"}).DecisionID == "d-2" })
	if st := c.Stats(); st.RejectedStale != 2 || st.Applied != 2 {
		t.Errorf("stats %+v; want 2 stale rejections, 2 applied", st)
	}
}

// TestRestartWithoutStateAfterDelete: a bare KV delete while an enforcement
// point is down, then a restart without a state file: the block is rebuilt
// from the signed decision history and stays enforced; an unblock in that
// history still lifts its block, and an old block replayed into the bucket
// after it is stale. Without the history (NoHistory) the delete would lift
// the block: the attack this closes.
func TestRestartWithoutStateAfterDelete(t *testing.T) {
	e := newRevEnv(t)
	e.block(t, "d-1", "dev-1")
	e.block(t, "d-2", "dev-2")
	oldD2 := e.rawValue(t, "dev-2")
	e.clock.Advance(time.Minute)
	e.unblock(t, "dev-2")

	// The attacker, holding KV write access, deletes dev-1's block and
	// puts the old dev-2 block back over its unblock.
	if err := e.kv.Delete(e.ctx, schemas.KVKey(schemas.ScopeDevice, "dev-1")); err != nil {
		t.Fatal(err)
	}
	e.put(t, "dev-2", oldD2)

	bare := e.start(t, Options{EnforcerID: "no-history", NoHistory: true})
	bare.waitSynced(t)
	if v := bare.Check(Request{Device: "dev-1"}); !v.Allowed() {
		t.Errorf("without history: dev-1 %+v; the bucket alone no longer holds its block", v)
	}
	if v := bare.Check(Request{Device: "dev-2"}); v.DecisionID != "d-2" {
		t.Errorf("without history: dev-2 %+v; the replayed block is all the bucket shows", v)
	}
	bare.stop()

	c := e.start(t, Options{})
	c.waitSynced(t)
	if v := c.Check(Request{Device: "dev-1"}); v.DecisionID != "d-1" {
		t.Errorf("with history: dev-1 %+v; want d-1 still enforced after a bare delete", v)
	}
	if v := c.Check(Request{Device: "dev-2"}); !v.Allowed() {
		t.Errorf("with history: dev-2 %+v; want allowed (lifted by a signed unblock)", v)
	}
	st := c.Stats()
	if st.HistoryRead != 3 || st.HistoryErrors != 0 || st.RejectedStale != 1 || st.IgnoredDeletes != 1 || st.Applied != 1 {
		t.Errorf("stats %+v; want 3 decisions read from history, the replay stale, the delete ignored, 1 applied", st)
	}
	if n := c.applyCount("d-1", schemas.ActionBlock); n != 1 {
		t.Errorf("%d block receipts for d-1; want 1", n)
	}

	// A later signed unblock lifts it, as always.
	e.clock.Advance(time.Minute)
	e.unblock(t, "dev-1")
	waitFor(t, "dev-1 unblocked", func() bool { return c.Check(Request{Device: "dev-1"}).Allowed() })
}
