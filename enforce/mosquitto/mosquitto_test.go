package mosquitto

import (
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestEnforcerTarget: blocks of MQTT usernames become usernames to
// disable, a username stays disabled while any block names it, throttles
// are acknowledged not_applicable, other scopes are ignored, and a block is
// acknowledged applied only once its username is disabled (failed, once,
// while the broker refuses it). Run (against a real broker) is tested by
// 'iotwatch enforce mosquitto' in cmd/iotwatch and by enforce's
// TestOneNamespace.
func TestEnforcerTarget(t *testing.T) {
	if _, err := New(Config{Retry: 0}); err == nil {
		t.Error("New accepted a zero Retry")
	}
	owned := filepath.Join(t.TempDir(), "state.dynsec")
	if err := os.WriteFile(owned, []byte(`{"v":1,"disabled":["old-dev"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var reports []schemas.ApplyReceipt
	m, err := New(Config{Retry: time.Second, Log: slog.New(slog.DiscardHandler), OwnedFile: owned,
		Report: func(r schemas.ApplyReceipt) { reports = append(reports, r) }})
	if err != nil {
		t.Fatal(err)
	}
	if !m.owned["old-dev"] {
		t.Errorf("owned %v: the file's disabled username is not loaded", m.owned)
	}
	m.Seed([]schemas.Decision{
		{ID: "d1", Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername, Value: "dev-1"},
		{ID: "d2", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "dev-1"},
		{ID: "d3", Action: schemas.ActionBlock, Scope: schemas.ScopeAPIKey, Value: "0123456789abcdef"},
		{ID: "d4", Action: schemas.ActionBlock, Scope: schemas.ScopeIP, Value: "203.0.113.7"},
		{ID: "d5", Action: schemas.ActionThrottle, Scope: schemas.ScopeMQTTUsername, Value: "dev-2"},
	})
	target := func() []string { return slices.Sorted(maps.Keys(m.target())) }
	if got := target(); !slices.Equal(got, []string{"dev-1"}) {
		t.Errorf("target %v, want [dev-1]", got)
	}
	if len(reports) != 1 || reports[0].DecisionID != "d5" || reports[0].Result != schemas.ReceiptNotApplicable || reports[0].Reason != schemas.ReceiptReasonAction {
		t.Errorf("reports %+v, want the throttle d5 not_applicable", reports)
	}
	reports = nil

	// The broker refuses, then accepts: failed once, then applied once.
	m.OnApply(schemas.ApplyReceipt{DecisionID: "d6", Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername, Value: "dev-3"})
	refusal := &DynSecError{Command: "disableClient", Username: "dev-3", Message: "Client not found"}
	m.acknowledge(map[string]error{"dev-3": refusal}, nil)
	m.acknowledge(map[string]error{"dev-3": refusal}, nil)
	m.owned["dev-1"], m.owned["dev-3"] = true, true
	m.acknowledge(nil, nil)
	m.acknowledge(nil, nil)
	var got []string
	for _, r := range reports {
		got = append(got, r.DecisionID+" "+r.Result+" "+r.Reason)
	}
	slices.Sort(got)
	want := []string{"d1 applied ", "d6 applied ", "d6 failed refused"}
	if !slices.Equal(got, want) {
		t.Errorf("reports %q, want %q", got, want)
	}

	m.OnApply(schemas.ApplyReceipt{Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername, Value: "dev-1", DecisionID: "d7"})
	m.OnApply(schemas.ApplyReceipt{Action: schemas.ActionUnblock, Scope: schemas.ScopeMQTTUsername, Value: "dev-3"})
	m.OnExpire(schemas.Decision{Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername, Value: "dev-1"})
	if got := target(); len(got) != 0 {
		t.Errorf("after every block is gone: target %v, want none", got)
	}
	if st := m.Stats(); st.IgnoredScope != 3 || st.IgnoredThrottle != 1 {
		t.Errorf("stats %+v, want three decisions ignored for their scope and one throttle", st)
	}
}
