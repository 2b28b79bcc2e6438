package enforce

import (
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestScopesAndResults: an enforcement point enforces the scopes it can match
// and acknowledges every other as not_applicable, once; with Deferred it
// leaves the receipts of what it applies to Report; the cidr scope matches a
// network.
func TestScopesAndResults(t *testing.T) {
	e := newEnv(t)
	e.publish(t,
		e.decision(t, "d-dev", schemas.ActionBlock, schemas.ScopeDevice, "therm-5"),
		e.decision(t, "d-user", schemas.ActionBlock, schemas.ScopeMQTTUsername, "therm-5"),
		e.decision(t, "d-cid", schemas.ActionBlock, schemas.ScopeMQTTClientID, "therm-5"),
		e.decision(t, "d-net", schemas.ActionBlock, schemas.ScopeCIDR, "198.51.100.0/24"),
	)
	httpPoint := e.start(t, Options{EnforcerID: "http-1"})
	mqttPoint := e.start(t, Options{EnforcerID: "mqtt-1", Scopes: []string{schemas.ScopeMQTTUsername}, Deferred: true})
	httpPoint.waitSynced(t)
	mqttPoint.waitSynced(t)

	if v := httpPoint.Check(Request{Device: "therm-5"}); v.DecisionID != "d-dev" {
		t.Errorf("http: Check(device therm-5) = %+v, want d-dev: an MQTT block must not win", v)
	}
	if v := httpPoint.Check(Request{IP: ip("198.51.100.77")}); v.DecisionID != "d-net" {
		t.Errorf("http: Check(198.51.100.77) = %+v, want the cidr block d-net", v)
	}
	if v := mqttPoint.Check(Request{Device: "therm-5", IP: ip("198.51.100.77")}); !v.Allowed() {
		t.Errorf("mqtt: Check = %+v; it enforces no HTTP scope", v)
	}
	if got := len(mqttPoint.Active()); got != 1 {
		t.Errorf("mqtt: %d active decisions, want 1 (its mqtt_username block): %+v", got, mqttPoint.Active())
	}
	// The broker's enforcer reports its block once the broker confirmed it.
	mqttPoint.Report(schemas.ApplyReceipt{DecisionID: "d-user", Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername,
		Value: "therm-5", KeyID: "k1", Result: schemas.ReceiptApplied})

	want := map[string]string{
		"http-1 d-dev": schemas.ReceiptApplied, "http-1 d-net": schemas.ReceiptApplied,
		"http-1 d-user": schemas.ReceiptNotApplicable, "http-1 d-cid": schemas.ReceiptNotApplicable,
		"mqtt-1 d-dev": schemas.ReceiptNotApplicable, "mqtt-1 d-net": schemas.ReceiptNotApplicable,
		"mqtt-1 d-cid": schemas.ReceiptNotApplicable, "mqtt-1 d-user": schemas.ReceiptApplied,
	}
	waitFor(t, "receipts", func() bool {
		return httpPoint.Stats().ReceiptsSent+mqttPoint.Stats().ReceiptsSent == uint64(len(want))
	})
	// A resync applies nothing again and acknowledges nothing again.
	e.publish(t, e.decision(t, "d-user", schemas.ActionBlock, schemas.ScopeMQTTUsername, "therm-5"))
	e.publish(t, e.decision(t, "d-probe", schemas.ActionBlock, schemas.ScopeDevice, "probe"))
	waitFor(t, "probe", func() bool { return !httpPoint.Check(Request{Device: "probe"}).Allowed() })
	want["http-1 d-probe"], want["mqtt-1 d-probe"] = schemas.ReceiptApplied, schemas.ReceiptNotApplicable
	waitFor(t, "receipts", func() bool {
		return httpPoint.Stats().ReceiptsSent+mqttPoint.Stats().ReceiptsSent == uint64(len(want))
	})
	rs := e.receipts(t)
	if len(rs) != len(want) {
		t.Errorf("%d receipts, want %d: %+v", len(rs), len(want), rs)
	}
	for _, r := range rs {
		k := r.EnforcerID + " " + r.DecisionID
		if r.Outcome() != want[k] || r.KeyID != "k1" || r.AppliedAt.IsZero() {
			t.Errorf("receipt %s: %+v; want result %q", k, r, want[k])
		}
		if r.Outcome() == schemas.ReceiptNotApplicable && (r.Reason != schemas.ReceiptReasonScope || r.Detail == "") {
			t.Errorf("receipt %s: not_applicable without its reason: %+v", k, r)
		}
	}
	if n := mqttPoint.applyCount("d-user", schemas.ActionBlock); n != 1 {
		t.Errorf("mqtt: OnApply(d-user) called %d times, want 1", n)
	}
}
