package incident

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestRestartMidCampaign: a grouper restarted from its saved state, at
// points inside the credential-stuffing run, inside the flood and between
// them, before a class alert and before a device alert it reaches, and
// several times in one day, gives the same incidents (ids,
// contents, versions), the same incidents table and the same incident per
// alert as one that ran unbroken; with alerts arriving out of order too.
func TestRestartMidCampaign(t *testing.T) {
	for _, disorder := range []time.Duration{0, 2 * time.Minute} {
		alerts := mixed()
		if disorder > 0 {
			alerts = arrival(alerts, 3, disorder)
		}
		want := groupRestarting(alerts, nil)
		n := len(alerts)
		// Right before the flood's class alert and the camera alert it
		// reaches: what their incidents offer (Offers) survives too.
		class := slices.IndexFunc(alerts, func(a schemas.Alert) bool { return a.ID == "e-class-1" })
		camera := slices.IndexFunc(alerts, func(a schemas.Alert) bool { return a.ID == "a-x-3" })
		for _, restarts := range [][]int{{60}, {125}, {200}, {n - 20}, {1, 40, 90, 160, 230, n - 1}, {class}, {camera}} {
			got := groupRestarting(alerts, restarts)
			if !reflect.DeepEqual(got.final, want.final) {
				t.Errorf("disorder %v, restarts %v: final incidents differ: %d vs %d", disorder, restarts, len(got.final), len(want.final))
				for id, w := range want.final {
					if g := got.final[id]; !reflect.DeepEqual(g, w) {
						t.Errorf("incident %s\n got %+v\nwant %+v", id, g, w)
					}
				}
			}
			if !reflect.DeepEqual(got.table, want.table) {
				t.Errorf("disorder %v, restarts %v: incidents tables differ", disorder, restarts)
			}
			if !reflect.DeepEqual(got.ofAlert, want.ofAlert) || got.retired != want.retired {
				t.Errorf("disorder %v, restarts %v: alerts joined other incidents (retired %d, want %d)", disorder, restarts, got.retired, want.retired)
			}
		}
	}
	// Without the state, a restart inside the stuffing run opens a second
	// incident for it: the test can fail.
	alerts := mixed()
	g := New(Config{})
	for i := range alerts[:60] {
		g.Add(&alerts[i], "")
	}
	cold := New(Config{})
	if inc := cold.Add(&alerts[60], ""); inc == nil || inc.ID == ID(alerts[0].ID) {
		t.Fatalf("a cold grouper joined %v to the run's incident", inc)
	}
	warm := New(Config{})
	if err := warm.LoadState(g.AppendState(nil)); err != nil {
		t.Fatal(err)
	}
	if inc := warm.Add(&alerts[60], ""); inc == nil || inc.ID != ID(alerts[0].ID) || inc.Alerts != 61 {
		t.Fatalf("after a restart alert %s joined %+v, want %s with 61 alerts", alerts[60].ID, inc, ID(alerts[0].ID))
	}
	// A redelivered alert from before the restart is recognised.
	if inc := warm.Add(&alerts[10], ""); inc != nil || warm.Stats().Duplicates != 1 {
		t.Errorf("a redelivered alert after the restart updated %+v", inc)
	}
}

// TestLoadStateRejectsDamage: a truncated state, a flipped version or
// trailing bytes are an error, and leave the grouper empty (no open
// incident), never a half-loaded one.
func TestLoadStateRejectsDamage(t *testing.T) {
	alerts := mixed()
	g := New(Config{})
	for i := range alerts[:150] {
		g.Add(&alerts[i], decisionOf(alerts[i].ID))
	}
	state := g.AppendState(nil)
	if again := g.AppendState(nil); string(again) != string(state) {
		t.Fatal("two saves of one state differ")
	}
	bad := map[string][]byte{
		"empty":     nil,
		"truncated": state[:len(state)/2],
		"trailing":  append(append([]byte{}, state...), 0),
		"version":   append(append([]byte{}, state[:len(stateMagic)]...), append([]byte{9, 0, 0, 0}, state[len(stateMagic)+4:]...)...),
	}
	for name, b := range bad {
		h := New(Config{})
		err := h.LoadState(b)
		if err == nil {
			t.Errorf("%s: loaded", name)
		}
		if st := h.Stats(); st.Open != 0 || st.Opened != 0 {
			t.Errorf("%s: %d open incidents after a failed load", name, st.Open)
		}
		if name == "truncated" && !errors.Is(err, errTruncated) {
			t.Errorf("%s: %v", name, err)
		}
	}
	h := New(Config{})
	if err := h.LoadState(state); err != nil {
		t.Fatal(err)
	}
	if h.Stats() != g.Stats() {
		t.Errorf("stats %+v, want %+v", h.Stats(), g.Stats())
	}
}
