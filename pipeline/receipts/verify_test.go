package receipts

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestForgedReceiptsRejected: with the enforcement points' keys configured, a
// receipt signed by the enforcement point it names is stored as verified;
// forged ones (another key under its id, a field changed after signing, an
// unknown key, another enforcement point's key, no signature) are stored only
// in the rejected table with the reason, counted, and never in receipts; and
// a forgery cannot replace the verified row of the same decision and enforcer.
func TestForgedReceiptsRejected(t *testing.T) {
	e := newEnv(t, "t_receipts_forged")
	pub1, priv1, _ := ed25519.GenerateKey(nil)
	pub2, priv2, _ := ed25519.GenerateKey(nil)
	_, privMallory, _ := ed25519.GenerateKey(nil)
	v := NewVerifier(map[string][]ed25519.PublicKey{"nginx-1": {pub1}, "nginx-2": {pub2}})

	sign := func(r schemas.ApplyReceipt, keyID string, priv ed25519.PrivateKey) schemas.ApplyReceipt {
		t.Helper()
		if err := schemas.SignReceipt(&r, keyID, priv); err != nil {
			t.Fatal(err)
		}
		return r
	}
	good := receipt("d-1", "nginx-1", schemas.ActionBlock, applied)
	good.Result = schemas.ReceiptApplied
	good = sign(good, "nginx-1", priv1)
	tampered := sign(receipt("d-1", "nginx-2", schemas.ActionBlock, applied), "nginx-2", priv2)
	tampered.Result = schemas.ReceiptFailed // changed after signing
	// Mallory claims nginx-1 failed to apply d-1: the row that would replace the verified one.
	wrongKey := receipt("d-1", "nginx-1", schemas.ActionBlock, applied.Add(time.Second))
	wrongKey.Result = schemas.ReceiptFailed
	wrongKey = sign(wrongKey, "nginx-1", privMallory)
	unknown := sign(receipt("d-2", "mallory", schemas.ActionBlock, applied), "mallory", privMallory)
	// nginx-2 signs a receipt as itself, then it is relabelled as nginx-1's.
	otherEnforcer := sign(receipt("d-3", "nginx-2", schemas.ActionBlock, applied), "nginx-2", priv2)
	otherEnforcer.EnforcerID = "nginx-1"
	unsigned := receipt("d-4", "nginx-1", schemas.ActionBlock, applied)

	cases := []struct {
		name   string
		r      schemas.ApplyReceipt
		status string
	}{
		{"signed", good, schemas.ReceiptVerified},
		{"tampered", tampered, schemas.ReceiptBadSignature},
		{"wrong key", wrongKey, schemas.ReceiptBadSignature},
		{"unknown key", unknown, schemas.ReceiptUnknownKey},
		{"other enforcer's key", otherEnforcer, schemas.ReceiptWrongEnforcer},
		{"unsigned", unsigned, schemas.ReceiptUnsigned},
	}
	for _, c := range cases {
		// Distinct message ids: the forger chooses them, and the duplicate
		// window must not be what stops a forgery.
		e.publish(t, schemas.SubjectDecisionsApplied, schemas.ReceiptMsgID(&c.r)+"."+c.name, c.r)
	}
	e.startVerified(t, v)
	waitFor(t, "5 rejected rows", func() bool { return e.count(t, "SELECT count() FROM %s.receipts_rejected FINAL") == 5 })
	waitFor(t, "1 receipt row", func() bool { return e.count(t, "SELECT count() FROM %s.receipts FINAL") == 1 })

	// The one receipt row is the genuine one, verified, naming its key.
	var result, verification, signer string
	row := e.q.QueryRow(e.ctx, "SELECT result, verification, receipt_key_id FROM "+schemas.QuoteIdent(e.db)+".receipts FINAL WHERE decision_id = 'd-1' AND enforcer = 'nginx-1'")
	if err := row.Scan(&result, &verification, &signer); err != nil {
		t.Fatal(err)
	}
	if result != schemas.ReceiptApplied || verification != schemas.ReceiptVerified || signer != "nginx-1" {
		t.Errorf("receipt row: result %q verification %q key %q; want applied, verified, nginx-1", result, verification, signer)
	}
	// Each forgery is visible as what it is, with what it claimed.
	for _, c := range cases[1:] {
		var status string
		row := e.q.QueryRow(e.ctx, "SELECT verification FROM "+schemas.QuoteIdent(e.db)+".receipts_rejected FINAL WHERE decision_id = ? AND enforcer = ? AND result = ?",
			c.r.DecisionID, c.r.EnforcerID, c.r.Outcome())
		if err := row.Scan(&status); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if status != c.status {
			t.Errorf("%s: stored as %q, want %q", c.name, status, c.status)
		}
	}
	if n := e.count(t, "SELECT count() FROM %s.receipts_rejected FINAL WHERE verification IN ('verified', 'unverified')"); n != 0 {
		t.Errorf("%d rejected rows say verified or unverified", n)
	}
	// Counted by reason.
	want := map[string]uint64{schemas.ReceiptVerified: 1, schemas.ReceiptBadSignature: 2, schemas.ReceiptUnknownKey: 1,
		schemas.ReceiptWrongEnforcer: 1, schemas.ReceiptUnsigned: 1, schemas.ReceiptUnverified: 0}
	for status, n := range want {
		if got := v.Count(status); got != n {
			t.Errorf("count of %s = %d, want %d", status, got, n)
		}
	}
	var sb strings.Builder
	v.WriteMetrics(&sb)
	if !strings.Contains(sb.String(), schemas.MetricReceiptsVerified+`{verification="bad_signature"} 2`) {
		t.Errorf("metrics:\n%s", sb.String())
	}
}

// TestEnforcerReceiptsVerified closes the loop: a real enforcement client
// with its receipt key applies a signed block, and its receipt is stored as
// verified; a forger then publishes on the receipts subject, under the same
// enforcer id, that the block failed: the forgery lands in receipts_rejected
// and the verified "applied" row stands.
func TestEnforcerReceiptsVerified(t *testing.T) {
	e := newEnv(t, "t_receipts_enforcer")
	decPub, decPriv, _ := ed25519.GenerateKey(nil)
	recPub, recPriv, _ := ed25519.GenerateKey(nil)
	v := NewVerifier(map[string][]ed25519.PublicKey{"edge-1": {recPub}})
	e.startVerified(t, v)

	c, err := enforce.New(enforce.Options{EnforcerID: "edge-1", Keys: map[string]ed25519.PublicKey{"k1": decPub}, ReceiptKey: recPriv})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, e.js) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("enforcement client: %v", err)
		}
	})
	now := time.Now()
	d := schemas.Decision{ID: "dec-e2e", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "lock-7",
		CreatedAt: now, ExpiresAt: now.Add(time.Hour), Issuer: "test", SchemaV: schemas.SchemaVersion}
	if err := schemas.SignDecision(&d, "k1", decPriv); err != nil {
		t.Fatal(err)
	}
	if err := sink.NewNATSPublisher(e.js, e.kv, nil).PublishDecisions(e.ctx, []schemas.Decision{d}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the verified receipt", func() bool {
		return e.count(t, "SELECT count() FROM %s.receipts FINAL WHERE decision_id = 'dec-e2e' AND verification = 'verified' AND result = 'applied'") == 1
	})

	forged := receipt("dec-e2e", "edge-1", schemas.ActionBlock, now.Add(time.Second))
	forged.Result, forged.Reason = schemas.ReceiptFailed, schemas.ReceiptReasonRefused
	e.publish(t, schemas.SubjectDecisionsApplied, "forged-1", forged)
	waitFor(t, "the forgery rejected", func() bool {
		return e.count(t, "SELECT count() FROM %s.receipts_rejected FINAL WHERE decision_id = 'dec-e2e' AND verification = 'unsigned'") == 1
	})
	var result, verification string
	row := e.q.QueryRow(e.ctx, "SELECT result, verification FROM "+schemas.QuoteIdent(e.db)+".receipts FINAL WHERE decision_id = 'dec-e2e' AND enforcer = 'edge-1'")
	if err := row.Scan(&result, &verification); err != nil {
		t.Fatal(err)
	}
	if result != schemas.ReceiptApplied || verification != schemas.ReceiptVerified {
		t.Errorf("after the forgery the receipt says %q %q, want applied verified", result, verification)
	}
}
