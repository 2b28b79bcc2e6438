package eval

import (
	"bytes"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/iotwatch/iotwatch/internal/geoiptest"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestSummarizeAggregatesPerType(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC)
	lab := func(id, typ, dev string) sim.Label {
		return sim.Label{ID: id, Type: typ, Device: dev, Start: t0, End: t0.Add(5 * time.Minute)}
	}
	labels := []sim.Label{
		lab("f1", sim.AttackFlood, "cam-1"), lab("f2", sim.AttackFlood, "cam-2"),
		lab("a1", sim.AttackAuthFailures, "th-1"), lab("a2", sim.AttackAuthFailures, "th-2"), lab("a3", sim.AttackAuthFailures, "th-3"),
	}
	alert := func(id, dev string, after time.Duration) StoredAlert {
		return StoredAlert{ID: id, Device: dev, Time: t0.Add(after), Reasons: []string{"r"}, Detectors: []string{"d"}}
	}
	alerts := []StoredAlert{
		alert("x1", "cam-1", 10*time.Second),
		alert("x2", "th-1", 5*time.Second), alert("x3", "th-2", 20*time.Second), alert("x4", "th-3", time.Minute),
		alert("x5", "th-3", 2*time.Minute),    // a second alert on an attack: true, TTD unchanged
		alert("x6", "meter-9", 3*time.Minute), // no label: false
	}
	ds := []StoredDecision{{ID: "d1", AlertID: "x1"}, {ID: "d2", AlertID: "x6"}, {ID: "d3", AlertID: "x6"}}
	res := summarize(Evaluate(labels, alerts, ds, 100, 10*time.Hour), sim.AttackTypes)

	want := map[string][5]float64{ // injected, detected, recall, ttd median, ttd max; -1: null
		sim.AttackFlood:        {2, 1, 0.5, 10, 10},
		sim.AttackAuthFailures: {3, 3, 1, 20, 60},
	}
	val := func(p *float64) float64 {
		if p == nil {
			return -1
		}
		return *p
	}
	if len(res.Types) != len(sim.AttackTypes) {
		t.Fatalf("%d types, want one row per attack type (%d)", len(res.Types), len(sim.AttackTypes))
	}
	for _, r := range res.Types {
		w, ok := want[r.Type]
		if !ok {
			w = [5]float64{0, 0, -1, -1, -1}
		}
		got := [5]float64{float64(r.Injected), float64(r.Detected), val(r.Recall), val(r.TTDMedianS), val(r.TTDMaxS)}
		if got != w {
			t.Errorf("%s: got %v, want %v", r.Type, got, w)
		}
	}
	if res.Alerts != 6 || res.TrueAlerts != 5 || res.FalseAlerts != 1 || val(res.Precision) != 5.0/6 {
		t.Errorf("alerts %d true %d false %d precision %v; want 6, 5, 1, 5/6", res.Alerts, res.TrueAlerts, res.FalseAlerts, val(res.Precision))
	}
	if res.FalsePer1000DevHours != 1 { // 1 false alert in 100 devices × 10 h
		t.Errorf("false alerts per 1,000 device-hours = %v, want 1", res.FalsePer1000DevHours)
	}
	if res.Decisions != 3 || res.TrueDecisions != 1 || res.FalseDecisions != 2 {
		t.Errorf("decisions %d true %d false %d; want 3, 1, 2", res.Decisions, res.TrueDecisions, res.FalseDecisions)
	}
	for _, r := range res.Types { // each detected attack counts once per reason
		reasons := map[string]int{}
		if r.Detected > 0 {
			reasons["d/r"] = r.Detected
		}
		if !maps.Equal(r.Reasons, reasons) {
			t.Errorf("%s: reasons %v, want %v", r.Type, r.Reasons, reasons)
		}
	}
	if res.FalseByReason["d/r"] != 1 {
		t.Errorf("false alerts by reason = %v", res.FalseByReason)
	}

	// Even TTD counts take the mean of the middle two.
	labels = append(labels, lab("a4", sim.AttackAuthFailures, "th-4"))
	res = summarize(Evaluate(labels, append(alerts, alert("x7", "th-4", 40*time.Second)), nil, 100, 10*time.Hour), sim.AttackTypes)
	if r := res.Types[slices.Index(sim.AttackTypes, sim.AttackAuthFailures)]; val(r.TTDMedianS) != 30 {
		t.Errorf("median of 5, 20, 40, 60 s = %v, want 30", val(r.TTDMedianS))
	}

	// No alerts: precision is undefined, not 0 or NaN.
	res = summarize(Evaluate(labels, nil, nil, 100, 10*time.Hour), sim.AttackTypes)
	if res.Precision != nil || res.TrueAlerts != 0 || res.Types[0].Recall == nil || *res.Types[0].Recall != 0 {
		t.Errorf("without alerts: precision %v, true alerts %d, flood recall %v", res.Precision, res.TrueAlerts, res.Types[0].Recall)
	}
	var out bytes.Buffer
	res.Print(&out)
	if !strings.Contains(out.String(), "precision n/a (no alerts)") {
		t.Errorf("output does not say precision is undefined:\n%s", out.String())
	}
}

// TestReplayStackEnrichesFromGeoIP checks that the offline stack of replay and
// eval attacks fills what a log line lacks from --geoip, as the pipeline does.
func TestReplayStackEnrichesFromGeoIP(t *testing.T) {
	path := geoiptest.Write(t, "Test-City", []geoiptest.Network{{Prefix: "84.128.0.0/16", Record: mmdbtype.Map{
		"country":  mmdbtype.Map{"iso_code": mmdbtype.String("JP")},
		"location": mmdbtype.Map{"latitude": mmdbtype.Float64(35.68), "longitude": mmdbtype.Float64(139.69)},
	}}})
	geo, err := geoip.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer geo.Close()
	st, err := NewReplayStack(pipeline.Config{GeoIP: geo, Decide: decide.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("cam-1"))
	ev.ClientIP = netip.MustParseAddr("84.128.3.7")
	ev.Time = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	var sc schemas.Scored
	st.Score(&ev, &sc, func(*schemas.Alert, *schemas.Decision) {})
	if ev.Country.String() != "JP" || ev.Lat == 0 {
		t.Errorf("event after process: country %q, coordinates %v,%v; want JP with coordinates", ev.Country, ev.Lat, ev.Lon)
	}
}

// TestNearMissAttribution checks that a false alert is attributed to one
// near miss (the first kind in sim.NearMissKinds that it falls on), that a
// fleet-wide label covers every device in its window, and that alerts on no
// near miss are counted apart.
func TestNearMissAttribution(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	near := []sim.Label{
		{Type: sim.NearBackendIncident, Start: t0, End: t0.Add(10 * time.Minute)},
		{Type: sim.NearRollout, Device: "th-1", Start: t0, End: t0.Add(time.Hour)},
		{Type: sim.NearBorderCrossing, Device: "veh-1", Start: t0.Add(2 * time.Hour), End: t0.Add(3 * time.Hour)},
	}
	falses := []StoredAlert{
		{ID: "a", Device: "th-1", Time: t0.Add(5 * time.Minute)},    // rollout and incident: rollout comes first
		{ID: "b", Device: "cam-9", Time: t0.Add(11 * time.Minute)},  // the incident, within its grace
		{ID: "c", Device: "cam-9", Time: t0.Add(30 * time.Minute)},  // nothing
		{ID: "d", Device: "veh-1", Time: t0.Add(150 * time.Minute)}, // border crossing
		{ID: "e", Device: "veh-2", Time: t0.Add(150 * time.Minute)}, // nothing: another vehicle
	}
	rows, unexplained := nearMissRows(near, falses)
	got := map[string]nearMissRow{}
	for _, r := range rows {
		got[r.Kind] = r
	}
	want := map[string]nearMissRow{
		sim.NearRollout:         {Kind: sim.NearRollout, Injected: 1, Alerted: 1, FalseAlerts: 1},
		sim.NearBackendIncident: {Kind: sim.NearBackendIncident, Injected: 1, Alerted: 1, FalseAlerts: 1},
		sim.NearBorderCrossing:  {Kind: sim.NearBorderCrossing, Injected: 1, Alerted: 1, FalseAlerts: 1},
		sim.NearOwnerHome:       {Kind: sim.NearOwnerHome},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %+v, want %+v", k, got[k], w)
		}
	}
	if unexplained != 2 || len(rows) != len(sim.NearMissKinds) {
		t.Errorf("unexplained %d (want 2), %d rows (want %d)", unexplained, len(rows), len(sim.NearMissKinds))
	}
	if rows, unexplained := nearMissRows(nil, falses); rows != nil || unexplained != len(falses) {
		t.Errorf("without near misses: %v, %d unexplained", rows, unexplained)
	}
}
