package enforce

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestKeyTTLExpiry: on a server with per-key TTLs the server removes a block
// from the bucket when it expires, nobody deleting it, and the client reports
// the marker it leaves as an expiry, not as an unblock or an ignored delete.
func TestKeyTTLExpiry(t *testing.T) {
	e := newEnv(t)
	if ok, err := bus.KeyTTL(e.ctx, e.kv); err != nil || !ok {
		t.Fatalf("KeyTTL = %v, %v; want per-key TTLs on the embedded server", ok, err)
	}
	var mu sync.Mutex
	var expired []string
	// The sweep never runs: only the server's marker can end the block early.
	c := e.start(t, Options{Now: time.Now, SweepInterval: time.Hour, OnExpire: func(d schemas.Decision) {
		mu.Lock()
		expired = append(expired, d.ID)
		mu.Unlock()
	}})
	c.waitSynced(t)
	now := time.Now()
	d := schemas.Decision{ID: "d-short", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "dev-1",
		CreatedAt: now, ExpiresAt: now.Add(time.Second), Issuer: "test", SchemaV: schemas.SchemaVersion}
	if err := schemas.SignDecision(&d, "k1", e.priv); err != nil {
		t.Fatal(err)
	}
	e.publish(t, d)
	waitFor(t, "block applied", func() bool { return c.Stats().Applied == 1 })
	key := schemas.KVKey(d.Scope, d.Value)
	waitFor(t, "the server to remove the expired block", func() bool {
		_, err := e.kv.Get(e.ctx, key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	waitFor(t, "the client to see the expiry", func() bool { return c.Stats().Expired == 1 })
	st := c.Stats()
	if st.Active != 0 || st.Removed != 0 || st.IgnoredDeletes != 0 || c.applyCount("d-short", schemas.ActionUnblock) != 0 {
		t.Errorf("after a TTL expiry: stats %+v, unblock receipts %d; want 0 active, nothing removed or ignored", st, c.applyCount("d-short", schemas.ActionUnblock))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(expired) != 1 || expired[0] != "d-short" {
		t.Errorf("OnExpire reported %q; want d-short", expired)
	}
}

// TestSignedUnblocks: only a verified unblock that names the enforced block
// (or is newer) lifts it; unsigned, tampered, unknown-key and stale unblocks,
// and bare KV deletes and purges, leave it enforced.
func TestSignedUnblocks(t *testing.T) {
	e := newEnv(t)
	state := filepath.Join(t.TempDir(), "enforce.state")
	block := e.decision(t, "d-b", schemas.ActionBlock, schemas.ScopeDevice, "dev-1")
	e.publish(t, block)
	c := e.start(t, Options{StateFile: state})
	c.waitSynced(t)
	key := schemas.KVKey(block.Scope, block.Value)
	put := func(d schemas.Decision) {
		t.Helper()
		data, _ := json.Marshal(&d)
		if _, err := e.kv.Put(e.ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	blocked := func(what string) {
		t.Helper()
		if v := c.Check(Request{Device: "dev-1"}); v.DecisionID != "d-b" {
			t.Fatalf("after %s: %+v; want d-b still enforced", what, v)
		}
	}
	e.clock.Advance(time.Minute)

	unsigned := e.decision(t, schemas.UnblockID("d-b"), schemas.ActionUnblock, schemas.ScopeDevice, "dev-1")
	unsigned.Signature = ""
	put(unsigned)
	waitFor(t, "unsigned unblock rejected", func() bool { return c.Stats().RejectedUnsigned == 1 })
	blocked("an unsigned unblock")

	tampered := e.decision(t, schemas.UnblockID("d-b"), schemas.ActionUnblock, schemas.ScopeDevice, "dev-1")
	tampered.Reason = "changed after signing"
	put(tampered)
	waitFor(t, "tampered unblock rejected", func() bool { return c.Stats().RejectedBadSig == 1 })
	blocked("a tampered unblock")

	_, otherPriv, _ := ed25519.GenerateKey(nil)
	foreign := e.decision(t, schemas.UnblockID("d-b"), schemas.ActionUnblock, schemas.ScopeDevice, "dev-1")
	if err := schemas.SignDecision(&foreign, "k9", otherPriv); err != nil {
		t.Fatal(err)
	}
	put(foreign)
	waitFor(t, "unknown-key unblock rejected", func() bool { return c.Stats().RejectedUnknown == 1 })
	blocked("an unblock signed by an unknown key")

	// A genuine unblock of an earlier block, replayed from the stream's history.
	stale := e.decision(t, schemas.UnblockID("d-earlier"), schemas.ActionUnblock, schemas.ScopeDevice, "dev-1")
	stale.CreatedAt = block.CreatedAt.Add(-time.Hour)
	if err := schemas.SignDecision(&stale, "k1", e.priv); err != nil {
		t.Fatal(err)
	}
	put(stale)
	waitFor(t, "stale unblock ignored", func() bool { return c.Stats().UnblocksIgnored == 1 })
	blocked("a replayed older unblock")

	if err := e.kv.Delete(e.ctx, key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bare delete ignored", func() bool { return c.Stats().IgnoredDeletes == 1 })
	blocked("a bare KV delete")
	if err := e.kv.Purge(e.ctx, key); err != nil {
		t.Fatal(err)
	}
	// A restart while the key is gone: the state file's block stays enforced.
	c.stop()
	c = e.start(t, Options{StateFile: state})
	c.waitSynced(t)
	blocked("a KV purge and a restart")
	if st := c.Stats(); st.IgnoredDeletes != 1 || st.Removed != 0 {
		t.Errorf("after the restart: stats %+v; want 1 ignored delete (the missing key), none removed", st)
	}

	// The signed unblock lifts it, even with the key gone meanwhile, and is receipted.
	e.publish(t, e.decision(t, schemas.UnblockID("d-b"), schemas.ActionUnblock, schemas.ScopeDevice, "dev-1"))
	waitFor(t, "signed unblock", func() bool { return c.Check(Request{Device: "dev-1"}).Allowed() })
	if n := c.applyCount("d-b", schemas.ActionUnblock); n != 1 {
		t.Errorf("%d unblock receipts for d-b; want 1", n)
	}
	waitFor(t, "receipt published", func() bool { return c.Stats().ReceiptsSent == 1 })
	var found bool
	for _, r := range e.receipts(t) {
		if r.DecisionID == "d-b" && r.Action == schemas.ActionUnblock && r.KeyID == "k1" && r.EnforcerID == "test-enforcer" {
			found = true
		}
	}
	if !found {
		t.Errorf("no unblock receipt for d-b in %+v", e.receipts(t))
	}
}

// TestAllowUnsignedDeleteLifts: with AllowUnsigned (tests, demos) a KV delete
// of a live decision still lifts it, as before signed unblocks.
func TestAllowUnsignedDeleteLifts(t *testing.T) {
	e := newEnv(t)
	e.publish(t, e.decision(t, "d-b", schemas.ActionBlock, schemas.ScopeDevice, "dev-1"))
	c := e.start(t, Options{AllowUnsigned: true})
	c.waitSynced(t)
	if err := e.kv.Delete(e.ctx, schemas.KVKey(schemas.ScopeDevice, "dev-1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delete lifts", func() bool { return c.Check(Request{Device: "dev-1"}).Allowed() })
	if st := c.Stats(); st.Removed != 1 || st.IgnoredDeletes != 0 {
		t.Errorf("stats %+v; want 1 removed", st)
	}
}
