package decide

import (
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestAllowlistCovers(t *testing.T) {
	a, err := ParseAllowlist([]string{"lock-7", "key-a", "10.1.0.0/16", "192.0.2.9", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	f := func(scope, value string, want bool) {
		t.Helper()
		if got := a.Covers(scope, value); got != want {
			t.Errorf("Covers(%s, %q) = %v, want %v", scope, value, got, want)
		}
	}
	f(schemas.ScopeDevice, "lock-7", true)
	f(schemas.ScopeDevice, "lock-8", false)
	f(schemas.ScopeAPIKey, "key-a", true)
	f(schemas.ScopeAPIKey, "lock-7", true) // one name list for devices and keys, as Allows
	f(schemas.ScopeDevice, "", false)
	f(schemas.ScopeIP, "10.1.2.3", true)
	f(schemas.ScopeIP, "10.2.0.1", false)
	f(schemas.ScopeIP, "192.0.2.9", true)
	f(schemas.ScopeIP, "192.0.2.10", false)
	f(schemas.ScopeIP, "10.1.4.0/24", true)   // inside the allowlisted range
	f(schemas.ScopeIP, "10.0.0.0/8", false)   // only overlaps it
	f(schemas.ScopeIP, "192.0.2.0/24", false) // contains an allowlisted address: not lifted whole
	f(schemas.ScopeIP, "2001:db8::1", true)
	f(schemas.ScopeIP, "::ffff:10.1.2.3", true)
	f(schemas.ScopeIP, "not-an-ip", false)
	f(schemas.ScopeIP, "lock-7", false)
	f(schemas.ScopeTenant, "lock-7", false) // tenants are never lifted
	f("other", "lock-7", false)
	var none *Allowlist
	if none.Covers(schemas.ScopeDevice, "lock-7") {
		t.Error("a nil allowlist covers nothing")
	}
}

func TestLifts(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	allow, err := ParseAllowlist([]string{"lock-7", "key-a", "10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	blk := func(id, action, scope, value string, expires time.Time) schemas.Decision {
		return schemas.Decision{ID: id, Action: action, Scope: scope, Value: value, Tenant: "acme", Device: "dev-" + id,
			CreatedAt: now.Add(-time.Minute), ExpiresAt: expires, Reason: volume.ReasonRateSpike, Score: 0.95,
			AlertID: "a-" + id, Issuer: "iotwatch", Signature: "ed25519:k:x", SchemaV: schemas.SchemaVersion}
	}
	later := now.Add(time.Hour)
	active := []schemas.Decision{
		blk("1", schemas.ActionBlock, schemas.ScopeDevice, "lock-7", later),
		blk("2", schemas.ActionBlock, schemas.ScopeDevice, "lock-8", later),         // not allowlisted
		blk("3", schemas.ActionThrottle, schemas.ScopeAPIKey, "key-a", time.Time{}), // never expires
		blk("4", schemas.ActionBlock, schemas.ScopeIP, "10.1.9.9", later),
		blk("5", schemas.ActionBlock, schemas.ScopeTenant, "lock-7", later),       // tenant: never
		blk("6", schemas.ActionBlock, schemas.ScopeDevice, "lock-7", now),         // expired
		blk("7", schemas.ActionDryRunBlock, schemas.ScopeDevice, "lock-7", later), // not enforced
		blk("8", schemas.ActionUnblock, schemas.ScopeDevice, "lock-7", later),
	}
	dry := blk("9", schemas.ActionBlock, schemas.ScopeDevice, "lock-7", later)
	dry.DryRun = true
	active = append(active, dry)

	got := Lifts(allow, active, "iotwatch-2", now)
	if len(got) != 3 {
		t.Fatalf("got %d unblocks, want 3: %+v", len(got), got)
	}
	for i, src := range []schemas.Decision{active[0], active[2], active[3]} {
		u := got[i]
		want := schemas.Decision{ID: schemas.UnblockID(src.ID), Action: schemas.ActionUnblock,
			Scope: src.Scope, Value: src.Value, Tenant: src.Tenant, Device: src.Device, CreatedAt: now,
			Reason: schemas.ReasonAllowlisted, AlertID: src.AlertID, Issuer: "iotwatch-2", SchemaV: schemas.SchemaVersion}
		if u != want {
			t.Errorf("unblock %d:\n got %+v\nwant %+v", i, u, want)
		}
	}
	// Pure: the same input gives the same ids.
	again := Lifts(allow, active, "iotwatch-2", now)
	for i := range got {
		if again[i] != got[i] {
			t.Errorf("unblock %d differs on a second call", i)
		}
	}
	if Lifts(nil, active, "x", now) != nil {
		t.Error("a nil allowlist lifts nothing")
	}
}
