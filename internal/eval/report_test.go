package eval

import (
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/sim"
)

func TestEvaluateMatchesAlertsToLabels(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC)
	labels := []sim.Label{
		{ID: "atk-1", Type: sim.AttackFlood, Device: "cam-1", Start: t0, End: t0.Add(5 * time.Minute)},
		{ID: "atk-2", Type: sim.AttackStolenAPIKey, Device: "lock-2", APIKey: "key-2", Start: t0, End: t0.Add(time.Hour)},
		{ID: "atk-3", Type: sim.AttackAuthFailures, Device: "meter-3", Start: t0, End: t0.Add(time.Minute)},
	}
	alerts := []StoredAlert{
		{ID: "a1", Device: "cam-1", Time: t0.Add(7 * time.Second), Reasons: []string{"rate_spike"}, Detectors: []string{"volume"}},
		{ID: "a2", Device: "other", APIKey: "key-2", Time: t0.Add(time.Minute), Reasons: []string{"new_country"}, Detectors: []string{"geo"}},
		{ID: "a3", Device: "cam-1", Time: t0.Add(-time.Hour), Reasons: []string{"rate_spike"}},            // before the attack: false
		{ID: "a4", Device: "meter-3", Time: t0.Add(10 * time.Minute), Reasons: []string{"auth_failures"}}, // too late: false
	}
	ds := []StoredDecision{{ID: "d1", AlertID: "a1", Scope: "device", Value: "cam-1"}, {ID: "d2", AlertID: "a3"}}
	r := Evaluate(labels, alerts, ds, 100, 3*time.Hour)
	if !r.Attacks[0].Detected || r.Attacks[0].TTD != 7*time.Second || r.Attacks[0].Blocked != "device=cam-1" {
		t.Errorf("flood result = %+v", r.Attacks[0])
	}
	if !r.Attacks[1].Detected || r.Attacks[1].Reasons[0] != "geo/new_country" {
		t.Errorf("stolen key result = %+v", r.Attacks[1])
	}
	if r.Attacks[2].Detected {
		t.Errorf("an alert after the grace period must not count: %+v", r.Attacks[2])
	}
	if len(r.FalseAlerts) != 2 || r.FalseBlocks != 1 {
		t.Errorf("false alerts %d, false blocks %d; want 2 and 1", len(r.FalseAlerts), r.FalseBlocks)
	}
	if s := r.String(); !strings.Contains(s, "Detected 2 of 3 attacks") {
		t.Errorf("report:\n%s", s)
	}
}

// TestTenantAlertMatchesTenantAttackOnly: a tenant alert is the finding of
// an attack spread thin over that tenant, within its window; not of another
// tenant's, nor of one device's attack in the same tenant (a false alert
// there).
func TestTenantAlertMatchesTenantAttackOnly(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC)
	labels := []sim.Label{
		{ID: "atk-1", Type: sim.AttackTenantSpread, Tenant: "acme", Devices: []string{"cam-1", "cam-2"}, Start: t0, End: t0.Add(5 * time.Minute)},
		{ID: "atk-2", Type: sim.AttackFlood, Tenant: "globex", Device: "cam-9", Start: t0, End: t0.Add(5 * time.Minute)},
	}
	alerts := []StoredAlert{
		{ID: "a1", EntityKind: "tenant", Entity: "acme", Time: t0.Add(3 * time.Minute), Reasons: []string{"tenant_auth_failures"}, Detectors: []string{"entity"}},
		{ID: "a2", EntityKind: "tenant", Entity: "globex", Time: t0.Add(3 * time.Minute), Reasons: []string{"tenant_rate_spike"}, Detectors: []string{"entity"}},
		{ID: "a3", EntityKind: "tenant", Entity: "acme", Time: t0.Add(time.Hour), Reasons: []string{"tenant_auth_failures"}, Detectors: []string{"entity"}},
	}
	r := Evaluate(labels, alerts, nil, 100, 3*time.Hour)
	if !r.Attacks[0].Detected || r.Attacks[0].Reasons[0] != "entity/tenant_auth_failures" {
		t.Errorf("tenant spread result = %+v", r.Attacks[0])
	}
	if r.Attacks[1].Detected {
		t.Errorf("a tenant alert detected one device's flood: %+v", r.Attacks[1])
	}
	if len(r.FalseAlerts) != 2 {
		t.Errorf("false alerts %+v; want the other tenant's and the late one", r.FalseAlerts)
	}
}
