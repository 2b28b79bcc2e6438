package sink

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestLiftAllowlisted(t *testing.T) {
	env := newNATSEnv(t, true)
	now := time.Now().UTC().Truncate(time.Second) // the bucket's per-key TTL follows the wall clock
	blk := func(id, scope, value string) schemas.Decision {
		return schemas.Decision{ID: id, Action: schemas.ActionBlock, Scope: scope, Value: value, Tenant: "acme",
			Device: "dev-" + id, CreatedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour),
			Reason: volume.ReasonRateSpike, Score: 0.95, AlertID: "a-" + id, Issuer: "iotwatch", SchemaV: schemas.SchemaVersion}
	}
	active := []schemas.Decision{
		blk("d-1", schemas.ScopeDevice, "lock-7"),
		blk("d-2", schemas.ScopeDevice, "lock-8"),
		blk("d-3", schemas.ScopeAPIKey, "key-a"),
		blk("d-4", schemas.ScopeIP, "10.1.9.9"),
		blk("d-5", schemas.ScopeIP, "10.2.0.1"),
		blk("d-6", schemas.ScopeTenant, "lock-7"),
	}
	if err := env.pub.PublishDecisions(env.ctx, active); err != nil {
		t.Fatal(err)
	}
	// An entry that is not an iotwatch decision is left alone.
	if _, err := env.kv.Put(env.ctx, "device.6a756e6b", []byte("junk")); err != nil {
		t.Fatal(err)
	}
	allow, err := decide.ParseAllowlist([]string{"lock-7", "key-a", "10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}

	n, err := LiftAllowlisted(env.ctx, env.kv, allow, env.pub, "iotwatch-2", now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("lifted %d, want 3", n)
	}
	// Every lifted block is replaced by its signed unblock; the others stay.
	wantIDs := map[string]string{
		"device.6a756e6b": "",
		schemas.KVKey(schemas.ScopeDevice, "lock-7"): schemas.UnblockID("d-1"),
		schemas.KVKey(schemas.ScopeDevice, "lock-8"): "d-2",
		schemas.KVKey(schemas.ScopeAPIKey, "key-a"):  schemas.UnblockID("d-3"),
		schemas.KVKey(schemas.ScopeIP, "10.1.9.9"):   schemas.UnblockID("d-4"),
		schemas.KVKey(schemas.ScopeIP, "10.2.0.1"):   "d-5",
		schemas.KVKey(schemas.ScopeTenant, "lock-7"): "d-6",
	}
	keys, err := env.kv.Keys(env.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(wantIDs) {
		t.Fatalf("keys %q; want %d", keys, len(wantIDs))
	}
	for key, id := range wantIDs {
		e, err := env.kv.Get(env.ctx, key)
		if err != nil {
			t.Fatalf("key %q: %v", key, err)
		}
		var d schemas.Decision
		_ = json.Unmarshal(e.Value(), &d)
		if d.ID != id {
			t.Errorf("key %q holds decision %q; want %q", key, d.ID, id)
		}
		if d.Action == schemas.ActionUnblock {
			if err := schemas.VerifyDecision(&d, env.keys); err != nil {
				t.Errorf("unblock under %q: %v", key, err)
			}
		}
	}

	// The unblocks are in the stream's history, after the blocks, in key order.
	var unblocks []schemas.Decision
	for _, m := range env.streamMsgs(t, schemas.StreamDecisions) {
		if m.Subject != schemas.SubjectDecisionsPrefix+"."+schemas.ActionUnblock {
			continue
		}
		var d schemas.Decision
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		unblocks = append(unblocks, d)
	}
	wantValues := []string{"key-a", "lock-7", "10.1.9.9"} // api_key.*, device.*, ip.*
	if len(unblocks) != 3 {
		t.Fatalf("%d unblocks in the stream, want 3", len(unblocks))
	}
	for i, d := range unblocks {
		if d.Value != wantValues[i] || d.Reason != schemas.ReasonAllowlisted || d.Issuer != "iotwatch-2" || !d.CreatedAt.Equal(now) {
			t.Errorf("unblock %d = %+v, want value %q", i, d, wantValues[i])
		}
	}

	// Again: nothing left to lift.
	if n, err := LiftAllowlisted(env.ctx, env.kv, allow, env.pub, "iotwatch-2", now); err != nil || n != 0 {
		t.Fatalf("second lift: %d, %v; want 0, nil", n, err)
	}
}

func TestLiftAllowlistedEmptyBucket(t *testing.T) {
	env := newNATSEnv(t, true)
	allow, _ := decide.ParseAllowlist([]string{"lock-7"})
	if n, err := LiftAllowlisted(env.ctx, env.kv, allow, env.pub, "iotwatch", time.Now()); err != nil || n != 0 {
		t.Fatalf("empty bucket: %d, %v; want 0, nil", n, err)
	}
	if _, err := env.kv.Keys(env.ctx); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("keys: %v", err)
	}
}
