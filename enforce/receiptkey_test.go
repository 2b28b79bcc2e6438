package enforce

import (
	"crypto/ed25519"
	"errors"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestReceiptsSigned: with a receipt key every receipt the client publishes
// (applied, not_applicable, unblock) verifies against its public key under
// its enforcer id, and not against another key; without one they are
// unsigned.
func TestReceiptsSigned(t *testing.T) {
	e := newEnv(t)
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, _, _ := ed25519.GenerateKey(nil)
	e.publish(t,
		e.decision(t, "d-dev", schemas.ActionBlock, schemas.ScopeDevice, "dev-1"),
		e.decision(t, "d-mqtt", schemas.ActionBlock, schemas.ScopeMQTTUsername, "therm-1"),
	)
	c := e.start(t, Options{EnforcerID: "gw-1", ReceiptKey: priv})
	c.waitSynced(t)
	e.publish(t, e.decision(t, "u-dev", schemas.ActionUnblock, schemas.ScopeDevice, "dev-1"))
	waitFor(t, "3 receipts published", func() bool { return c.Stats().ReceiptsSent == 3 })
	rs := e.receipts(t)
	if len(rs) != 3 {
		t.Fatalf("%d receipts, want 3", len(rs))
	}
	results := map[string]bool{}
	for i := range rs {
		r := &rs[i]
		results[r.Outcome()] = true
		if err := schemas.VerifyReceipt(r, map[string][]ed25519.PublicKey{"gw-1": {pub}}); err != nil {
			t.Errorf("receipt %+v: %v", r, err)
		}
		if err := schemas.VerifyReceipt(r, map[string][]ed25519.PublicKey{"gw-1": {otherPub}}); !errors.Is(err, schemas.ErrBadSignature) {
			t.Errorf("receipt verifies against another key: %v", err)
		}
	}
	if !results[schemas.ReceiptApplied] || !results[schemas.ReceiptNotApplicable] {
		t.Errorf("results %v, want applied and not_applicable receipts signed", results)
	}
}

func TestReceiptsUnsignedWithoutKey(t *testing.T) {
	e := newEnv(t)
	e.publish(t, e.decision(t, "d-dev", schemas.ActionBlock, schemas.ScopeDevice, "dev-1"))
	c := e.start(t, Options{})
	c.waitSynced(t)
	waitFor(t, "the receipt published", func() bool { return c.Stats().ReceiptsSent == 1 })
	if rs := e.receipts(t); len(rs) != 1 || rs[0].Signature != "" {
		t.Fatalf("receipts %+v, want one unsigned", rs)
	}
}
