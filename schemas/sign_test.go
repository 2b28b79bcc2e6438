package schemas

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testDecision() Decision {
	return Decision{
		ID: "dec-1", Action: ActionBlock, Scope: ScopeIP, Value: "10.0.0.0/24",
		Tenant: "acme", Device: "d-17",
		CreatedAt: time.Date(2026, 11, 22, 3, 4, 5, 123456789, time.UTC),
		ExpiresAt: time.Date(2026, 11, 22, 4, 4, 5, 0, time.FixedZone("X", 3600)),
		Reason:    "rate_spike", Score: 0.93, AlertID: "alert-9", Issuer: "iotwatch@host",
		SchemaV: SchemaVersion,
	}
}

func testKeys(t *testing.T, ids ...string) (map[string]ed25519.PrivateKey, map[string]ed25519.PublicKey) {
	t.Helper()
	privs, pubs := map[string]ed25519.PrivateKey{}, map[string]ed25519.PublicKey{}
	for _, id := range ids {
		pub, priv, err := ed25519.GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		privs[id], pubs[id] = priv, pub
	}
	return privs, pubs
}

func TestSignVerifyRoundTripThroughJSON(t *testing.T) {
	privs, pubs := testKeys(t, "k1")
	d := testDecision()
	if err := SignDecision(&d, "k1", privs["k1"]); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d.Signature, "ed25519:k1:") || SignatureKeyID(&d) != "k1" {
		t.Fatalf("signature %q; want ed25519:k1:<base64>", d.Signature)
	}
	if err := VerifyDecision(&d, pubs); err != nil {
		t.Fatalf("fresh signature: %v", err)
	}
	// What enforcement points see went through JSON (time zone lost, nanoseconds kept).
	data, err := json.Marshal(&d)
	if err != nil {
		t.Fatal(err)
	}
	var back Decision
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDecision(&back, pubs); err != nil {
		t.Fatalf("after JSON round trip: %v (%s)", err, data)
	}
}

// TestVerifyRejectsTamperedFields changes every field but Signature, one at a
// time, and expects ErrBadSignature. A new Decision field that the signing
// bytes miss makes this test fail.
func TestVerifyRejectsTamperedFields(t *testing.T) {
	privs, pubs := testKeys(t, "k1")
	base := testDecision()
	base.Revision = 1_800_000_000_000_000_000 // layout v2: every field is covered
	if err := SignDecision(&base, "k1", privs["k1"]); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(base)
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		if name == "Signature" {
			continue
		}
		d := base
		v := reflect.ValueOf(&d).Elem().Field(i)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Float64:
			v.SetFloat(v.Float() + 1e-9)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Int:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Struct: // time.Time
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Nanosecond)))
		default:
			t.Fatalf("field %s of kind %s: extend this test and the signing bytes", name, v.Kind())
		}
		if err := VerifyDecision(&d, pubs); !errors.Is(err, ErrBadSignature) {
			t.Errorf("tampered %s: err %v; want ErrBadSignature", name, err)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	privs, pubs := testKeys(t, "k1", "k2")
	f := func(name string, mutate func(d *Decision), keys map[string]ed25519.PublicKey, want error) {
		t.Helper()
		d := testDecision()
		if err := SignDecision(&d, "k1", privs["k1"]); err != nil {
			t.Fatal(err)
		}
		mutate(&d)
		err := VerifyDecision(&d, keys)
		if !errors.Is(err, want) {
			t.Errorf("%s: err %v; want %v", name, err, want)
		}
		if err != nil && !strings.Contains(err.Error(), `"dec-1"`) {
			t.Errorf("%s: error %q does not name the decision", name, err)
		}
	}
	none := func(*Decision) {}
	f("valid", none, pubs, nil)
	f("unsigned", func(d *Decision) { d.Signature = "" }, pubs, ErrUnsigned)
	f("unknown key id", none, map[string]ed25519.PublicKey{"k2": pubs["k2"]}, ErrUnknownKey)
	f("wrong key under the same id", none, map[string]ed25519.PublicKey{"k1": pubs["k2"]}, ErrBadSignature)
	f("signature renamed to another trusted key", func(d *Decision) {
		d.Signature = strings.Replace(d.Signature, ":k1:", ":k2:", 1)
	}, pubs, ErrBadSignature)
	f("other scheme", func(d *Decision) { d.Signature = "rsa:" + d.Signature }, pubs, ErrMalformedSignature)
	f("no key id", func(d *Decision) { d.Signature = "ed25519:" + d.Signature[len("ed25519:k1:"):] }, pubs, ErrMalformedSignature)
	f("short signature", func(d *Decision) { d.Signature = "ed25519:k1:AAAA" }, pubs, ErrMalformedSignature)
	f("not base64", func(d *Decision) { d.Signature = d.Signature[:len(d.Signature)-3] + "!!=" }, pubs, ErrMalformedSignature)
	f("signature bit flipped", func(d *Decision) {
		b := []byte(d.Signature)
		i := len("ed25519:k1:") + 3
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		d.Signature = string(b)
	}, pubs, ErrBadSignature)
}

// TestSigningBytesAreUnambiguous: moving bytes between adjacent string fields
// changes the signed bytes (length prefixes).
func TestSigningBytesAreUnambiguous(t *testing.T) {
	a, b := testDecision(), testDecision()
	a.Tenant, a.Device = "ab", "c"
	b.Tenant, b.Device = "a", "bc"
	if string(DecisionSigningBytes(&a, "k")) == string(DecisionSigningBytes(&b, "k")) {
		t.Fatal("tenant/device boundary is not covered")
	}
	if string(DecisionSigningBytes(&a, "k")) == string(DecisionSigningBytes(&a, "k2")) {
		t.Fatal("key id is not covered")
	}
}

func TestSignRejectsBadInput(t *testing.T) {
	privs, _ := testKeys(t, "k1")
	d := testDecision()
	if err := SignDecision(&d, "bad:id", privs["k1"]); err == nil {
		t.Fatal("key id with ':' accepted")
	}
	if err := SignDecision(&d, "k1", privs["k1"][:10]); err == nil {
		t.Fatal("short private key accepted")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	priv1, pub1, err := GenerateKey("iotwatch-2026-11")
	if err != nil {
		t.Fatal(err)
	}
	priv2, pub2, err := GenerateKey("iotwatch-2026-12")
	if err != nil {
		t.Fatal(err)
	}
	privPath := write("k1.key", priv1)
	id, priv, err := LoadPrivateKey(privPath)
	if err != nil || id != "iotwatch-2026-11" {
		t.Fatalf("LoadPrivateKey: id %q err %v", id, err)
	}
	// Old and new public keys in one file with a comment, as during a rotation.
	both := append([]byte("# rotation: accept old and new\n\n"), pub1...)
	both = append(both, pub2...)
	keys, err := LoadPublicKeys(write("trusted.pub", both))
	if err != nil || len(keys) != 2 {
		t.Fatalf("LoadPublicKeys: %d keys, err %v", len(keys), err)
	}
	d := testDecision()
	if err := SignDecision(&d, id, priv); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDecision(&d, keys); err != nil {
		t.Fatalf("verify with loaded keys: %v", err)
	}
	// A private key file contributes its public half.
	if keys, err := LoadPublicKeys(privPath); err != nil || VerifyDecision(&d, keys) != nil {
		t.Fatalf("public half of the private key file: %v", err)
	}
	// A retired key: only the new one is trusted.
	only2, err := LoadPublicKeys(write("new.pub", pub2))
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyDecision(&d, only2); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("retired key: %v; want ErrUnknownKey", err)
	}

	bad := func(name, content string, wantSub string) {
		t.Helper()
		p := write(name, []byte(content))
		_, _, err1 := LoadPrivateKey(p)
		_, err2 := LoadPublicKeys(p)
		for _, err := range []error{err1, err2} {
			if err == nil || !strings.Contains(err.Error(), wantSub) {
				t.Errorf("%s: err %v; want it to contain %q", name, err, wantSub)
			}
		}
	}
	bad("empty", "# nothing\n", "")
	bad("garbage", "hello world\n", "line 1")
	bad("short", "iotwatch-ed25519-public k1 AAAA\n", "has 3 bytes")
	bad("badid", "iotwatch-ed25519-public k:1 AAAA\n", `invalid key id "k:1"`)
	if _, _, err := LoadPrivateKey(write("pub-only", pub1)); err == nil {
		t.Error("LoadPrivateKey accepted a public key file")
	}
	if _, _, err := LoadPrivateKey(write("two", append(append([]byte{}, priv1...), priv2...))); err == nil {
		t.Error("LoadPrivateKey accepted two keys")
	}
	conflict := strings.Replace(string(pub2), "iotwatch-2026-12", "iotwatch-2026-11", 1)
	if _, err := LoadPublicKeys(write("a.pub", pub1), write("b.pub", []byte(conflict))); err == nil {
		t.Error("LoadPublicKeys accepted one key id with two keys")
	}
	if _, err := LoadPublicKeys(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadPublicKeys accepted a missing file")
	}
}

func BenchmarkVerifyDecision(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	d := testDecision()
	if err := SignDecision(&d, "k1", priv); err != nil {
		b.Fatal(err)
	}
	keys := map[string]ed25519.PublicKey{"k1": pub}
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifyDecision(&d, keys); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzParseKeyFile(f *testing.F) {
	priv, pub, _ := GenerateKey("k1")
	f.Add(priv)
	f.Add(pub)
	f.Add([]byte("# c\n\niotwatch-ed25519-public k AAAA\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := parseKeyFile(data)
		if err != nil {
			return
		}
		for _, k := range keys {
			if !ValidKeyID(k.id) || len(k.pub) != ed25519.PublicKeySize {
				t.Fatalf("accepted key %q with %d-byte public key", k.id, len(k.pub))
			}
		}
	})
}

func TestUnblockLifts(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	block := Decision{ID: "d-1", Action: ActionBlock, Scope: ScopeDevice, Value: "dev", CreatedAt: t0}
	f := func(mutate func(u *Decision), want bool) {
		t.Helper()
		u := Decision{ID: UnblockID("d-1"), Action: ActionUnblock, Scope: ScopeDevice, Value: "dev", CreatedAt: t0.Add(time.Minute)}
		mutate(&u)
		if got := Lifts(&u, &block); got != want {
			t.Errorf("Lifts(%+v) = %v; want %v", u, got, want)
		}
	}
	f(func(*Decision) {}, true)
	f(func(u *Decision) { u.CreatedAt = t0.Add(-time.Hour) }, true)                            // names it: clocks may differ
	f(func(u *Decision) { u.ID = "u-x" }, true)                                                // newer than the block
	f(func(u *Decision) { u.ID, u.CreatedAt = "u-x", t0 }, true)                               // same time
	f(func(u *Decision) { u.ID, u.CreatedAt = UnblockID("d-0"), t0.Add(-time.Second) }, false) // older, names another
	f(func(u *Decision) { u.Value = "other" }, false)
	f(func(u *Decision) { u.Scope = ScopeAPIKey }, false)
	f(func(u *Decision) { u.Action = ActionBlock }, false)
	f(func(u *Decision) { u.DryRun = true }, false)
	if id, ok := LiftedID(UnblockID("d-1")); !ok || id != "d-1" {
		t.Errorf("LiftedID(UnblockID(d-1)) = %q, %v", id, ok)
	}
	for _, id := range []string{"d-1", UnblockIDSuffix, ""} {
		if _, ok := LiftedID(id); ok {
			t.Errorf("LiftedID(%q) names a decision", id)
		}
	}
}

// TestRevisionSigned: the revision is covered by the signature (layout v2), so
// a replayed decision cannot be given a newer revision, nor a revised one be
// passed off as a v1 decision without one; a v1 decision still verifies.
func TestRevisionSigned(t *testing.T) {
	privs, pubs := testKeys(t, "k1")
	v1 := testDecision()
	if err := SignDecision(&v1, "k1", privs["k1"]); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDecision(&v1, pubs); err != nil {
		t.Fatalf("v1 decision: %v", err)
	}
	d := testDecision()
	d.Revision = 1_800_000_000_000_000_000
	if err := SignDecision(&d, "k1", privs["k1"]); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDecision(&d, pubs); err != nil {
		t.Fatalf("v2 decision: %v", err)
	}
	for _, rev := range []uint64{0, d.Revision + 1, d.Revision - 1, ^uint64(0)} {
		x := d
		x.Revision = rev
		if err := VerifyDecision(&x, pubs); !errors.Is(err, ErrBadSignature) {
			t.Errorf("revision changed to %d after signing: %v; want ErrBadSignature", rev, err)
		}
	}
	up := v1
	up.Revision = d.Revision
	if err := VerifyDecision(&up, pubs); !errors.Is(err, ErrBadSignature) {
		t.Errorf("v1 decision given a revision: %v; want ErrBadSignature", err)
	}
}

func TestNextRevision(t *testing.T) {
	now := time.Unix(1_800_000_000, 5)
	f := func(prev, want uint64) {
		t.Helper()
		if got := NextRevision(prev, now); got != want {
			t.Errorf("NextRevision(%d) = %d; want %d", prev, got, want)
		}
	}
	ns := uint64(now.UnixNano())
	f(0, ns)
	f(ns-1, ns)
	f(ns, ns+1)       // the same clock reading: still moves forward
	f(ns+500, ns+501) // a previous signer's clock ahead of ours
}

func TestUnblockLiftsByRevision(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	block := Decision{ID: "d-1", Action: ActionBlock, Scope: ScopeDevice, Value: "dev", CreatedAt: t0, Revision: 100}
	f := func(id string, created time.Time, rev uint64, want bool) {
		t.Helper()
		u := Decision{ID: id, Action: ActionUnblock, Scope: ScopeDevice, Value: "dev", CreatedAt: created, Revision: rev}
		if got := Lifts(&u, &block); got != want {
			t.Errorf("Lifts(%s created %s rev %d) = %v; want %v", id, created, rev, got, want)
		}
	}
	f(UnblockID("d-1"), t0, 50, true)                  // names it
	f("u-x", t0.Add(-time.Hour), 101, true)            // newer revision, whatever its clock says
	f("u-x", t0.Add(time.Hour), 99, false)             // older revision, whatever its clock says
	f("u-x", t0.Add(time.Hour), 0, false)              // an unblock from before revisions
	f(UnblockID("d-0"), t0.Add(time.Hour), 100, false) // same revision, names another
}
