package unblock

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestLift: an unblock over a held block names it and replaces it in the
// bucket; lifted again, nothing is published; without a held decision the
// unblock gets an id of its own.
func TestLift(t *testing.T) {
	b := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	privFile, _, err := schemas.GenerateKey("soc-1")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "soc-1.key")
	if err := os.WriteFile(path, privFile, 0o600); err != nil {
		t.Fatal(err)
	}
	keyID, key, err := schemas.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	block := schemas.Decision{ID: "d-1", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "acme/lock-17",
		Tenant: "acme", Device: "acme/lock-17", AlertID: "a-1", CreatedAt: now, ExpiresAt: now.Add(time.Hour), SchemaV: schemas.SchemaVersion}
	if err := schemas.SignDecision(&block, keyID, key); err != nil {
		t.Fatal(err)
	}
	if err := sink.NewNATSPublisher(b.JS, b.KV, nil).PublishDecisions(ctx, []schemas.Decision{block}); err != nil {
		t.Fatal(err)
	}
	req := Request{Scope: schemas.ScopeDevice, Value: "acme/lock-17", Reason: "ticket 1", Issuer: "alice", KeyID: keyID, Key: key, Now: now.Add(time.Minute)}

	res, err := Lift(ctx, b.JS, b.KV, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	u := res.Unblock
	if !res.Published || res.Held == nil || res.Held.ID != "d-1" || u.ID != schemas.UnblockID("d-1") || u.Action != schemas.ActionUnblock ||
		u.Tenant != "acme" || u.AlertID != "a-1" || u.Issuer != "alice" || u.Reason != schemas.ReasonAnalystUnblock+": ticket 1" || schemas.SignatureKeyID(&u) != keyID {
		t.Errorf("lift of a held block: %+v", res)
	}
	again, err := Lift(ctx, b.JS, b.KV, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Published || again.Held == nil || again.Held.ID != u.ID {
		t.Errorf("lift of a lifted block: %+v, want nothing published and the unblock held", again)
	}
	req.Value = "acme/lock-99"
	none, err := Lift(ctx, b.JS, b.KV, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !none.Published || none.Held != nil || none.Unblock.ID == "" || none.Unblock.ID == u.ID {
		t.Errorf("lift without a held decision: %+v", none)
	}
}
