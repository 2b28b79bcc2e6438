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

// TestEnforcerTarget: blocks in the configured scopes become usernames to
// disable, a username stays disabled while any block names it, and
// throttles and other scopes are counted and ignored. Run (against a real
// broker) is tested by 'iotwatch enforce mosquitto' in cmd/iotwatch.
func TestEnforcerTarget(t *testing.T) {
	if _, err := New(Config{Retry: 0}); err == nil {
		t.Error("New accepted a zero Retry")
	}
	owned := filepath.Join(t.TempDir(), "state.dynsec")
	if err := os.WriteFile(owned, []byte(`{"v":1,"disabled":["old-dev"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Scopes: map[string]bool{schemas.ScopeDevice: true, schemas.ScopeAPIKey: true},
		Retry: time.Second, Log: slog.New(slog.DiscardHandler), OwnedFile: owned})
	if err != nil {
		t.Fatal(err)
	}
	if !m.owned["old-dev"] {
		t.Errorf("owned %v: the file's disabled username is not loaded", m.owned)
	}
	m.Seed([]schemas.Decision{
		{Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "dev-1"},
		{Action: schemas.ActionBlock, Scope: schemas.ScopeAPIKey, Value: "dev-1"},
		{Action: schemas.ActionBlock, Scope: schemas.ScopeIP, Value: "203.0.113.7"},
		{Action: schemas.ActionThrottle, Scope: schemas.ScopeDevice, Value: "dev-2"},
	})
	target := func() []string { return slices.Sorted(maps.Keys(m.target())) }
	if got := target(); !slices.Equal(got, []string{"dev-1"}) {
		t.Errorf("target %v, want [dev-1]", got)
	}
	m.OnApply(schemas.ApplyReceipt{Action: schemas.ActionUnblock, Scope: schemas.ScopeDevice, Value: "dev-1"})
	if got := target(); !slices.Equal(got, []string{"dev-1"}) {
		t.Errorf("after one of two blocks naming dev-1 is lifted: target %v, want [dev-1]", got)
	}
	m.OnExpire(schemas.Decision{Action: schemas.ActionBlock, Scope: schemas.ScopeAPIKey, Value: "dev-1"})
	if got := target(); len(got) != 0 {
		t.Errorf("after both blocks are gone: target %v, want none", got)
	}
	if st := m.Stats(); st.IgnoredScope != 1 || st.IgnoredThrottle != 1 {
		t.Errorf("stats %+v, want one decision ignored for its scope and one throttle", st)
	}
}
