package receipts

import (
	"context"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestUnblocksStored: an unblock published on iotwatch.decisions.unblock (as
// 'iotwatch unblock' does) lands in the decisions table with its issuer and
// reason, once across a redelivery; a malformed one is not stored.
func TestUnblocksStored(t *testing.T) {
	e := newEnv(t, "unblocks_stored")
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	cfg := defaultConfig()
	cfg.fetchWait = 100 * time.Millisecond
	go func() { done <- runUnblocks(ctx, e.js, e.ch, cfg, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("runUnblocks: %v", err)
		}
	})
	subject := schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock
	u := schemas.Decision{ID: schemas.UnblockID("d-1"), Action: schemas.ActionUnblock, Scope: schemas.ScopeDevice, Value: "lock-000042",
		Tenant: "acme", Device: "lock-000042", AlertID: "a-1", CreatedAt: applied,
		Reason: schemas.ReasonAnalystUnblock + ": ticket SOC-1", Issuer: "analyst/alice", SchemaV: schemas.SchemaVersion}
	e.publish(t, subject, "", u)
	e.publish(t, subject, "", u) // a second copy: one row with FINAL
	e.publish(t, subject, "", []byte(`{"id":"","action":"unblock"}`))
	// A block on the decisions subject is not this consumer's business.
	e.publish(t, schemas.SubjectDecisionsPrefix+"."+schemas.ActionBlock, "", schemas.Decision{ID: "d-2", Action: schemas.ActionBlock, Scope: "device", Value: "x"})
	waitFor(t, "the unblock stored", func() bool {
		return e.count(t, "SELECT count() FROM %s.decisions FINAL WHERE action = 'unblock'") == 1
	})
	var issuer, reason, scope, value string
	if err := e.q.QueryRow(e.ctx, "SELECT issuer, reason, scope, value FROM "+schemas.QuoteIdent(e.db)+".decisions FINAL WHERE id = ?", u.ID).
		Scan(&issuer, &reason, &scope, &value); err != nil {
		t.Fatal(err)
	}
	if issuer != "analyst/alice" || reason != u.Reason || scope != "device" || value != "lock-000042" {
		t.Errorf("stored unblock: issuer %q reason %q scope %q value %q", issuer, reason, scope, value)
	}
	if n := e.count(t, "SELECT count() FROM %s.decisions"); n > 2 {
		t.Errorf("decisions rows = %d; want only the unblock (twice at most before a merge)", n)
	}
}
