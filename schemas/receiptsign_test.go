package schemas

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testReceipt() ApplyReceipt {
	return ApplyReceipt{
		DecisionID: "dec-1", EnforcerID: "gw-1", Action: ActionBlock, Scope: ScopeDevice, Value: "d-17",
		KeyID: "iotwatch-2026-11", AppliedAt: time.Date(2026, 12, 6, 10, 0, 0, 123456789, time.UTC),
		Result: ReceiptApplied, SchemaV: SchemaVersion,
	}
}

func TestReceiptSignVerifyThroughJSON(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	ring := map[string][]ed25519.PublicKey{"gw-1": {pub}}
	r := testReceipt()
	if err := SignReceipt(&r, "gw-1", priv); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	var back ApplyReceipt
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if err := VerifyReceipt(&back, ring); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if got := ReceiptSignerKeyID(&back); got != "gw-1" {
		t.Errorf("signer key id %q", got)
	}
}

// TestVerifyReceiptRejects: each way of forging a receipt maps to its status.
func TestVerifyReceiptRejects(t *testing.T) {
	pub1, priv1, _ := ed25519.GenerateKey(nil)
	pub2, priv2, _ := ed25519.GenerateKey(nil)
	_, privOther, _ := ed25519.GenerateKey(nil)
	ring := map[string][]ed25519.PublicKey{"gw-1": {pub1}, "gw-2": {pub2}}
	signed := func(id string, priv ed25519.PrivateKey, edit func(*ApplyReceipt)) ApplyReceipt {
		r := testReceipt()
		r.EnforcerID = id
		if err := SignReceipt(&r, id, priv); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(&r)
		}
		return r
	}
	f := func(name string, r ApplyReceipt, want string, wantErr error) {
		t.Helper()
		err := VerifyReceipt(&r, ring)
		if got := ReceiptVerification(err); got != want {
			t.Errorf("%s: status %q (err %v), want %q", name, got, err, want)
		}
		if wantErr != nil && !errors.Is(err, wantErr) {
			t.Errorf("%s: err %v, want %v", name, err, wantErr)
		}
	}
	f("signed", signed("gw-1", priv1, nil), ReceiptVerified, nil)
	f("unsigned", testReceipt(), ReceiptUnsigned, ErrUnsigned)
	f("garbage signature", signed("gw-1", priv1, func(r *ApplyReceipt) { r.Signature = "ed25519:gw-1:!!" }), ReceiptMalformedSignature, ErrMalformedSignature)
	f("result changed", signed("gw-1", priv1, func(r *ApplyReceipt) { r.Result = ReceiptFailed }), ReceiptBadSignature, ErrBadSignature)
	f("decision changed", signed("gw-1", priv1, func(r *ApplyReceipt) { r.DecisionID = "dec-2" }), ReceiptBadSignature, ErrBadSignature)
	f("time changed", signed("gw-1", priv1, func(r *ApplyReceipt) { r.AppliedAt = r.AppliedAt.Add(time.Nanosecond) }), ReceiptBadSignature, ErrBadSignature)
	f("wrong key under the id", signed("gw-1", privOther, nil), ReceiptBadSignature, ErrBadSignature)
	f("unknown key", signed("gw-9", privOther, nil), ReceiptUnknownKey, ErrUnknownKey)
	// gw-2 signs a receipt, then claims it is gw-1's: the key names gw-2.
	f("another enforcer's key", signed("gw-2", priv2, func(r *ApplyReceipt) { r.EnforcerID = "gw-1" }), ReceiptWrongEnforcer, ErrWrongEnforcer)
	if err := SignReceipt(new(testReceipt()), "gw-2", priv2); err == nil {
		t.Error("signing gw-1's receipt with key gw-2: no error")
	}
}

// TestKeyRingRotation: two keys under one id are both trusted.
func TestKeyRingRotation(t *testing.T) {
	dir := t.TempDir()
	var privs []ed25519.PrivateKey
	for _, name := range []string{"old", "new"} {
		priv, pub, err := GenerateKey("gw-1")
		if err != nil {
			t.Fatal(err)
		}
		for ext, data := range map[string][]byte{".key": priv, ".pub": pub} {
			if err := os.WriteFile(filepath.Join(dir, name+ext), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		_, p, err := LoadPrivateKey(filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		privs = append(privs, p)
	}
	ring, err := LoadPublicKeyRing(filepath.Join(dir, "old.pub"), filepath.Join(dir, "new.pub"), filepath.Join(dir, "new.key"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ring["gw-1"]) != 2 {
		t.Fatalf("ring holds %d keys for gw-1, want 2 (the same key twice counts once)", len(ring["gw-1"]))
	}
	for _, priv := range privs {
		r := testReceipt()
		if err := SignReceipt(&r, "gw-1", priv); err != nil {
			t.Fatal(err)
		}
		if err := VerifyReceipt(&r, ring); err != nil {
			t.Error(err)
		}
	}
	if _, err := LoadPublicKeyRing(); err == nil {
		t.Error("empty ring: no error")
	}
}

func BenchmarkVerifyReceipt(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	r := testReceipt()
	r.EnforcerID = "gw-1"
	if err := SignReceipt(&r, "gw-1", priv); err != nil {
		b.Fatal(err)
	}
	ring := map[string][]ed25519.PublicKey{"gw-1": {pub}}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyReceipt(&r, ring); err != nil {
			b.Fatal(err)
		}
	}
}
