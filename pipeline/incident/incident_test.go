package incident

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

var t0 = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

// stuffing is the i-th alert of a credential-stuffing run: one IP, a
// different device each time, an auth-failure finding on the token route.
func stuffing(i int) schemas.Alert {
	return schemas.Alert{
		ID: fmt.Sprintf("a-stuff-%d", i), Time: t0.Add(time.Duration(i) * time.Second), Tenant: "acme",
		Device: fmt.Sprintf("therm-%06d", i), APIKey: fmt.Sprintf("k-%d", i), ClientIP: "198.51.100.7",
		Command: "POST /v1/auth/token", Score: 0.7, Severity: schemas.SeverityMedium,
		Reasons: []schemas.Explanation{{Detector: "auth", Reason: "failures"}},
	}
}

// TestCredentialStuffingIsOneIncident: 300 alerts from one IP against 300
// devices make one incident naming the IP, its /24, 300 devices and the
// decisions, raised to critical by its breadth.
func TestCredentialStuffingIsOneIncident(t *testing.T) {
	g := New(Config{})
	var last *schemas.Incident
	ids := map[string]bool{}
	for i := range 300 {
		a := stuffing(i)
		dec := ""
		if i%3 == 0 {
			dec = fmt.Sprintf("d-%d", i)
		}
		last = g.Add(&a, dec)
		if last == nil {
			t.Fatalf("alert %d: no incident", i)
		}
		ids[last.ID] = true
	}
	if len(ids) != 1 {
		t.Fatalf("300 alerts from one IP made %d incidents, want 1: %v", len(ids), ids)
	}
	if want := ID("a-stuff-0"); last.ID != want {
		t.Errorf("id %q, want %q (from the first alert)", last.ID, want)
	}
	if last.Alerts != 300 || last.Version != 300 || last.Devices != 300 || len(last.DeviceSample) != MaxSample {
		t.Errorf("alerts %d version %d devices %d sample %d; want 300, 300, 300, %d", last.Alerts, last.Version, last.Devices, len(last.DeviceSample), MaxSample)
	}
	if !slices.Contains(last.Entities, "ip:198.51.100.7") || !slices.Contains(last.Entities, "prefix:198.51.100.0/24") {
		t.Errorf("entities %v lack the IP and its /24", last.Entities)
	}
	if last.DecisionCount != 100 || len(last.Decisions) != MaxSample || last.Decisions[0] != "d-0" {
		t.Errorf("decisions %d %v; want 100, the first %d", last.DecisionCount, last.Decisions, MaxSample)
	}
	if last.Severity != schemas.SeverityCritical {
		t.Errorf("severity %q, want critical (medium alerts over 300 devices)", last.Severity)
	}
	if !last.FirstSeen.Equal(t0) || !last.LastSeen.Equal(t0.Add(299*time.Second)) {
		t.Errorf("first %v last %v", last.FirstSeen, last.LastSeen)
	}
	if s := g.Stats(); s.Opened != 1 || s.Open != 1 || s.Updates != 300 {
		t.Errorf("stats %+v", s)
	}
}

// TestUnrelatedAlertsStaySeparate: alerts on different devices, IPs in
// different networks, keys and reasons make one incident each, even within
// seconds of one another; the same reason on the same command joins only
// within the campaign span.
func TestUnrelatedAlertsStaySeparate(t *testing.T) {
	g := New(Config{})
	reasons := []string{"rate_spike", "new_country", "new_command", "bytes_out"}
	ids := map[string]bool{}
	for i := range 4 {
		a := schemas.Alert{ID: fmt.Sprintf("a-%d", i), Time: t0.Add(time.Duration(i) * time.Second), Tenant: "acme",
			Device: fmt.Sprintf("dev-%d", i), ClientIP: fmt.Sprintf("203.0.%d.9", 10+i), Command: fmt.Sprintf("GET /c%d", i),
			Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "d", Reason: reasons[i]}}}
		ids[g.Add(&a, "").ID] = true
	}
	if len(ids) != 4 {
		t.Fatalf("4 unrelated alerts made %d incidents, want 4", len(ids))
	}
	// Same reason and command on another device: the campaign signature
	// joins within CampaignSpan, not after it.
	near := schemas.Alert{ID: "a-near", Time: t0.Add(time.Minute), Device: "dev-9", ClientIP: "192.0.2.1", Command: "GET /c0",
		Severity: schemas.SeverityLow, Reasons: []schemas.Explanation{{Detector: "d", Reason: "rate_spike"}}}
	if inc := g.Add(&near, ""); inc.ID != ID("a-0") || inc.Devices != 2 {
		t.Errorf("same reason and command a minute later: incident %q with %d devices, want %q with 2", inc.ID, inc.Devices, ID("a-0"))
	}
	far := near
	far.ID, far.Time, far.Device, far.ClientIP = "a-far", t0.Add(DefaultCampaignSpan+2*time.Minute), "dev-10", "192.0.3.1"
	if inc := g.Add(&far, ""); inc.ID != ID("a-far") {
		t.Errorf("same reason and command after the campaign span: joined %q, want a new incident", inc.ID)
	}
}

// TestRedeliveryCollapses: the same alerts again (a redelivery) change
// nothing, and a fresh grouper fed the same alerts (a restart) names the same
// incidents with the same versions.
func TestRedeliveryCollapses(t *testing.T) {
	alerts := make([]schemas.Alert, 50)
	for i := range alerts {
		alerts[i] = stuffing(i)
		if i >= 25 { // a second, unrelated run
			alerts[i].ClientIP, alerts[i].Command = "192.0.2.200", "GET /other"
			alerts[i].Time = alerts[i].Time.Add(2 * time.Hour)
		}
	}
	run := func(g *Grouper) []schemas.Incident {
		var out []schemas.Incident
		for i := range alerts {
			if inc := g.Add(&alerts[i], ""); inc != nil {
				out = append(out, *inc)
			}
		}
		return out
	}
	g := New(Config{})
	first := run(g)
	if again := run(g); len(again) != 0 {
		t.Errorf("redelivered alerts made %d updates, want 0", len(again))
	}
	if s := g.Stats(); s.Duplicates != 50 || s.Opened != 2 {
		t.Errorf("stats %+v: want 50 duplicates, 2 incidents", s)
	}
	second := run(New(Config{}))
	if len(first) != len(second) {
		t.Fatalf("restart: %d updates, want %d", len(second), len(first))
	}
	for i := range first {
		if first[i].ID != second[i].ID || first[i].Version != second[i].Version || first[i].Devices != second[i].Devices {
			t.Errorf("update %d: %s v%d after a restart, want %s v%d", i, second[i].ID, second[i].Version, first[i].ID, first[i].Version)
		}
	}
	if first[0].ID != ID("a-stuff-0") || first[25].ID != ID("a-stuff-25") {
		t.Errorf("incident ids %q, %q", first[0].ID, first[25].ID)
	}
}

// TestBounded: incidents close after the idle gap, and never more than
// MaxOpen are open (the idlest is evicted and counted).
func TestBounded(t *testing.T) {
	g := New(Config{MaxOpen: 10})
	for i := range 100 {
		a := schemas.Alert{ID: fmt.Sprintf("a-%d", i), Time: t0.Add(time.Duration(i) * time.Second), Device: fmt.Sprintf("dev-%d", i),
			ClientIP: fmt.Sprintf("10.%d.0.1", i), Severity: schemas.SeverityLow}
		g.Add(&a, "")
	}
	if s := g.Stats(); s.Open != 10 || s.Evicted != 90 || len(g.index) > 10*3 {
		t.Errorf("stats %+v, %d keys indexed: want 10 open, 90 evicted, at most 30 keys", s, len(g.index))
	}
	late := schemas.Alert{ID: "a-late", Time: t0.Add(DefaultIdleGap + 5*time.Minute), Device: "dev-99", ClientIP: "10.99.0.1"}
	if inc := g.Add(&late, ""); inc.ID != ID("a-late") {
		t.Errorf("after the idle gap the device's alert joined %q, want a new incident", inc.ID)
	}
	if s := g.Stats(); s.Open != 1 || s.Closed != 10 {
		t.Errorf("after the idle gap: stats %+v, want 1 open, 10 closed", s)
	}
	var closed []string
	g.OnClose(func(inc *schemas.Incident) { closed = append(closed, inc.ID) })
	g.Close()
	if s := g.Stats(); s.Open != 0 || len(closed) != 1 || closed[0] != ID("a-late") {
		t.Errorf("Close: stats %+v, closed %v; want none open, %q closed", s, closed, ID("a-late"))
	}
}

func TestPrefixOf(t *testing.T) {
	f := func(ip, want string) {
		t.Helper()
		got, ok := PrefixOf(ip)
		if !ok && want != "" || got != want {
			t.Errorf("PrefixOf(%q) = %q, %v; want %q", ip, got, ok, want)
		}
	}
	f("198.51.100.7", "198.51.100.0/24")
	f("::ffff:198.51.100.7", "198.51.100.0/24")
	f("2001:db8:1:2::7", "2001:db8:1::/48")
	f("not-an-ip", "")
}

// BenchmarkAdd: grouping one alert into a large campaign.
// BenchmarkAdd adds a credential-stuffing run's alerts; with class=true
// their devices are of one class, whose class alert is every 64th (so the
// one-way keys are sought and offered on every alert).
func BenchmarkAdd(b *testing.B) {
	for _, class := range []bool{false, true} {
		b.Run(fmt.Sprint("class=", class), func(b *testing.B) {
			g := New(Config{})
			alerts := make([]schemas.Alert, 1024)
			for i := range alerts {
				alerts[i] = stuffing(i)
				if class {
					alerts[i].Class = "thermostat/t-100"
					if i%64 == 0 {
						alerts[i] = schemas.Alert{Time: alerts[i].Time, Tenant: "acme", EntityKind: schemas.EntityClass, Entity: "acme/thermostat/t-100",
							Reasons: []schemas.Explanation{{Detector: "entity", Reason: "class_auth_failures"}}}
					}
				}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a := alerts[i%len(alerts)]
				a.ID = fmt.Sprint("a-", i)
				g.Add(&a, "")
				i++
			}
		})
	}
}

// mixed is a day's alerts from several sources, as the collector gets them
// from device workers and entity owners: a credential-stuffing run from one
// address (a device alert per victim and the address's own entity alerts,
// one with the block), a flood over many addresses with one signature, a
// device's own alerts, unrelated alerts, and a second run of the stuffer two
// hours later. The flood hits cameras of one class, whose class alert joins
// it (and one unrelated camera's alert within its span); the unrelated
// alerts are of devices of one class too, minutes apart.
func mixed() []schemas.Alert {
	var out []schemas.Alert
	for i := range 120 {
		a := stuffing(i)
		out = append(out, a)
	}
	entityAlert := func(id string, at time.Duration, reason string) schemas.Alert {
		return schemas.Alert{ID: id, Time: t0.Add(at), Tenant: "acme", EntityKind: schemas.EntityIP, Entity: "198.51.100.7",
			ClientIP: "198.51.100.7", Score: 0.95, Severity: schemas.SeverityHigh,
			Reasons: []schemas.Explanation{{Detector: "entity", Reason: reason}}}
	}
	out = append(out, entityAlert("e-stuff-1", 20*time.Second, "credential_stuffing"), entityAlert("e-stuff-2", 90*time.Second, "many_devices"))
	for i := range 80 { // a flood: new addresses in many networks, one signature
		out = append(out, schemas.Alert{ID: fmt.Sprintf("a-flood-%d", i), Time: t0.Add(20*time.Minute + time.Duration(i)*3*time.Second),
			Tenant: "acme", Device: fmt.Sprintf("cam-%d", i%7), Class: "camera/cx-200", ClientIP: fmt.Sprintf("100.%d.%d.1", 64+i%50, i), Command: "GET /v1/stream",
			Score: 0.8, Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "volume", Reason: "rate_spike"}}})
	}
	out = append(out, schemas.Alert{ID: "e-class-1", Time: t0.Add(22 * time.Minute), Tenant: "acme", EntityKind: schemas.EntityClass,
		Entity: "acme/camera/cx-200", Score: 0.9, Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "entity", Reason: "class_rate_spike"}}})
	for i := range 10 { // one device's own alerts, from its own address
		out = append(out, schemas.Alert{ID: fmt.Sprintf("a-own-%d", i), Time: t0.Add(time.Duration(i) * 4 * time.Minute), Tenant: "acme",
			Device: "meter-1", ClientIP: "10.0.0.5", Command: fmt.Sprintf("GET /own/%d", i), Severity: schemas.SeverityLow,
			Reasons: []schemas.Explanation{{Detector: "command", Reason: fmt.Sprintf("new_command_%d", i)}}})
	}
	for i := range 30 { // unrelated
		class := "meter/m-1"
		if i == 3 { // 21 minutes in
			class = "camera/cx-200"
		}
		out = append(out, schemas.Alert{ID: fmt.Sprintf("a-x-%d", i), Time: t0.Add(time.Duration(i) * 7 * time.Minute), Tenant: "acme",
			Device: fmt.Sprintf("x-%d", i), Class: class, ClientIP: fmt.Sprintf("172.16.%d.9", i), Command: fmt.Sprintf("GET /x/%d", i),
			Severity: schemas.SeverityMedium, Reasons: []schemas.Explanation{{Detector: "geo", Reason: fmt.Sprintf("r%d", i)}}})
	}
	for i := range 40 { // the stuffer again, two hours later
		a := stuffing(1000 + i)
		a.Time = t0.Add(2*time.Hour + time.Duration(i)*time.Second)
		out = append(out, a)
	}
	out = append(out, entityAlert("e-stuff-3", 2*time.Hour+10*time.Second, "credential_stuffing"))
	return out
}

// decisionOf returns the decision taken on the alert with id, "" for none:
// the entity alerts and every tenth device alert have one.
func decisionOf(id string) string {
	if id[0] == 'e' || len(id)%10 == 3 {
		return "d-" + id
	}
	return ""
}

// arrival returns alerts in an order the collector may see them: by event
// time plus a random delay of up to disorder each (sources interleaving, a
// worker behind another), the seed choosing the delays.
func arrival(alerts []schemas.Alert, seed uint64, disorder time.Duration) []schemas.Alert {
	rng := rand.New(rand.NewPCG(seed, 7))
	type late struct {
		at time.Time
		a  schemas.Alert
	}
	ls := make([]late, len(alerts))
	for i, a := range alerts {
		ls[i] = late{a.Time.Add(time.Duration(rng.Int64N(int64(disorder)))), a}
	}
	rng.Shuffle(len(ls), func(i, j int) { ls[i], ls[j] = ls[j], ls[i] })
	slices.SortStableFunc(ls, func(x, y late) int { return x.at.Compare(y.at) })
	out := make([]schemas.Alert, len(ls))
	for i := range ls {
		out[i] = ls[i].a
	}
	return out
}

// outcome is what grouping an arrival order produces: the incidents in
// their final state (closed at the end), keyed by id; the incidents table
// as ReplacingMergeTree leaves it (every update and retirement, highest
// version of each id); and each alert's incident, retirements followed.
type outcome struct {
	retired int
	final   map[string]schemas.Incident
	table   map[string]schemas.Incident
	ofAlert map[string]string
}

func group(alerts []schemas.Alert) outcome { return groupRestarting(alerts, nil) }

// groupRestarting is group with a restart before each alert index in
// restarts: the grouper's state is saved (AppendState) and loaded into a new
// Grouper (LoadState), which goes on, as the pipeline does from its
// checkpoint.
func groupRestarting(alerts []schemas.Alert, restarts []int) outcome {
	out := outcome{final: map[string]schemas.Incident{}, table: map[string]schemas.Incident{}, ofAlert: map[string]string{}}
	store := func(inc *schemas.Incident) {
		if old, ok := out.table[inc.ID]; !ok || inc.Version > old.Version {
			out.table[inc.ID] = *inc
		}
	}
	merged := map[string]string{}
	newGrouper := func() *Grouper {
		g := New(Config{})
		g.OnRetire(func(inc *schemas.Incident) { store(inc); merged[inc.ID] = inc.MergedInto })
		g.OnClose(func(inc *schemas.Incident) { out.final[inc.ID] = *clone(inc) })
		return g
	}
	g := newGrouper()
	for i := range alerts {
		if slices.Contains(restarts, i) {
			state := g.AppendState(nil)
			g = newGrouper()
			if err := g.LoadState(state); err != nil {
				panic(err)
			}
		}
		if inc := g.Add(&alerts[i], decisionOf(alerts[i].ID)); inc != nil {
			store(inc)
			out.ofAlert[alerts[i].ID] = inc.ID
		}
	}
	g.Close()
	out.retired = int(g.Stats().Retired)
	for a, id := range out.ofAlert {
		for next, ok := merged[id]; ok; next, ok = merged[id] {
			id = next
		}
		out.ofAlert[a] = id
	}
	return out
}

// TestOrderIndependent is a property test: whatever order the alerts arrive
// in (sources interleaved, each alert up to two minutes late), the same
// incidents come out, with the same ids and contents; the table holds one
// live row per incident, in its final state, and every other id it holds is
// retired into a live one; every alert's incident is a live one.
func TestOrderIndependent(t *testing.T) {
	alerts := mixed()
	want := group(alerts) // in event-time order
	if len(want.final) < 5 {
		t.Fatalf("the mixed day made %d incidents; the test needs several", len(want.final))
	}
	// The stuffer's device and entity alerts are one incident per run.
	first, second := want.ofAlert["a-stuff-0"], want.ofAlert["a-stuff-1000"]
	for _, id := range []string{"e-stuff-1", "e-stuff-2", "a-stuff-119"} {
		if want.ofAlert[id] != first {
			t.Errorf("alert %s joined %s, the stuffing run is %s", id, want.ofAlert[id], first)
		}
	}
	if want.ofAlert["e-stuff-3"] != second || second == first {
		t.Errorf("second run: %s and %s, first %s; want one incident apart from the first", want.ofAlert["e-stuff-3"], second, first)
	}
	if inc := want.final[first]; inc.Alerts != 122 || !slices.Contains(inc.Decisions, "d-e-stuff-1") || inc.Entities[0] != "ip:198.51.100.7" {
		t.Errorf("stuffing incident: %d alerts, decisions %v, entities %v; want 122, the entity block, the address first", inc.Alerts, inc.Decisions, inc.Entities)
	}
	for _, id := range []string{"a-flood-0", "a-flood-79", "e-class-1", "a-x-3"} {
		if want.ofAlert[id] != want.ofAlert["a-flood-40"] {
			t.Errorf("flood alert %s joined %s, not the flood's %s", id, want.ofAlert[id], want.ofAlert["a-flood-40"])
		}
	}
	for i := range 29 { // devices of one class, 7 minutes apart: apart
		if x, y := fmt.Sprintf("a-x-%d", i), fmt.Sprintf("a-x-%d", i+1); want.ofAlert[x] == want.ofAlert[y] {
			t.Errorf("unrelated alerts %s and %s joined one incident %s", x, y, want.ofAlert[x])
		}
	}
	retired := 0
	for seed := range uint64(12) {
		got := group(arrival(alerts, seed, 2*time.Minute))
		retired += got.retired
		if len(got.final) != len(want.final) {
			t.Errorf("order %d: %d incidents, want %d", seed, len(got.final), len(want.final))
		}
		for id, w := range want.final {
			g, ok := got.final[id]
			if !ok {
				t.Errorf("order %d: no incident %s (%d alerts)", seed, id, w.Alerts)
				continue
			}
			w.Version, g.Version = 0, 0 // the count of alerts; Alerts compares it
			if !reflect.DeepEqual(g, w) {
				t.Errorf("order %d: incident %s\n got %+v\nwant %+v", seed, id, g, w)
			}
		}
		live := 0
		for id, row := range got.table {
			if row.MergedInto == "" {
				live++
				if f, ok := got.final[id]; !ok || f.Alerts != row.Alerts {
					t.Errorf("order %d: live row %s with %d alerts, final %d", seed, id, row.Alerts, f.Alerts)
				}
			} else if _, ok := got.final[row.MergedInto]; !ok {
				if _, ok := got.table[row.MergedInto]; !ok {
					t.Errorf("order %d: %s retired into %s, which is nowhere", seed, id, row.MergedInto)
				}
			}
		}
		if live != len(got.final) {
			t.Errorf("order %d: %d live rows, %d incidents", seed, live, len(got.final))
		}
		if !maps.Equal(got.ofAlert, want.ofAlert) {
			t.Errorf("order %d: alerts joined other incidents", seed)
		}
	}
	if retired == 0 {
		t.Errorf("no order renamed or merged an incident: the orders test nothing")
	}
	t.Logf("12 orders: %d ids retired on the way", retired)
}

// TestEntityAlertJoinsDeviceAlerts: an address's entity alert (with its
// block) and the device alerts from that address are one incident, whichever
// comes first; it names the address and the block, and its id is the
// earliest alert's.
func TestEntityAlertJoinsDeviceAlerts(t *testing.T) {
	ent := schemas.Alert{ID: "e-1", Time: t0.Add(5 * time.Second), EntityKind: schemas.EntityIP, Entity: "198.51.100.7",
		ClientIP: "198.51.100.7", Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "entity", Reason: "credential_stuffing"}}}
	for _, entityFirst := range []bool{true, false} {
		g := New(Config{})
		var retired []string
		g.OnRetire(func(inc *schemas.Incident) { retired = append(retired, inc.ID+">"+inc.MergedInto) })
		var last *schemas.Incident
		if entityFirst {
			last = g.Add(&ent, "d-block")
		}
		for i := range 10 {
			a := stuffing(i)
			last = g.Add(&a, "")
		}
		if !entityFirst {
			last = g.Add(&ent, "d-block")
		}
		if s := g.Stats(); s.Open != 1 {
			t.Errorf("entity first %v: %d incidents open, want 1", entityFirst, s.Open)
		}
		if last.ID != ID("a-stuff-0") || last.Alerts != 11 || last.Devices != 10 || last.Entities[0] != "ip:198.51.100.7" ||
			!slices.Equal(last.Decisions, []string{"d-block"}) || !slices.Contains(last.Reasons, "entity/credential_stuffing") {
			t.Errorf("entity first %v: %+v", entityFirst, last)
		}
		if entityFirst && !slices.Equal(retired, []string{ID("e-1") + ">" + ID("a-stuff-0")}) {
			t.Errorf("renamed after the earlier device alert: retired %v, want %s into %s", retired, ID("e-1"), ID("a-stuff-0"))
		}
		if !entityFirst && len(retired) != 0 {
			t.Errorf("in event order nothing is retired: %v", retired)
		}
	}
}

// TestBridgeMerges: an alert sharing a key with each of two open incidents
// merges them into the one with the earliest alert, and retires the other's
// id with a version above its last.
func TestBridgeMerges(t *testing.T) {
	g := New(Config{})
	var retired []schemas.Incident
	g.OnRetire(func(inc *schemas.Incident) { retired = append(retired, *inc) })
	a := schemas.Alert{ID: "a-1", Time: t0, Device: "d-1", ClientIP: "192.0.2.1", Severity: schemas.SeverityLow}
	b := schemas.Alert{ID: "b-1", Time: t0.Add(time.Minute), Device: "d-2", ClientIP: "203.0.113.1", Severity: schemas.SeverityLow}
	b2 := b
	b2.ID, b2.Time = "b-2", t0.Add(2*time.Minute)
	for _, x := range []*schemas.Alert{&b, &b2, &a} {
		g.Add(x, "")
	}
	if s := g.Stats(); s.Open != 2 {
		t.Fatalf("%d open, want 2", s.Open)
	}
	bridge := schemas.Alert{ID: "c-1", Time: t0.Add(3 * time.Minute), Device: "d-1", ClientIP: "203.0.113.1", Severity: schemas.SeverityHigh}
	inc := g.Add(&bridge, "d-x")
	if inc.ID != ID("a-1") || inc.Alerts != 4 || inc.Devices != 2 || inc.Version != 4 || inc.LastAlertID != "c-1" {
		t.Errorf("merged: %+v", inc)
	}
	if len(retired) != 1 || retired[0].ID != ID("b-1") || retired[0].MergedInto != ID("a-1") || retired[0].Version != 3 {
		t.Errorf("retired %+v; want %s into %s at version 3", retired, ID("b-1"), ID("a-1"))
	}
	if s := g.Stats(); s.Open != 1 || s.Merged != 1 || s.Retired != 1 {
		t.Errorf("stats %+v", s)
	}
	// The merged incident's keys all lead to it.
	late := schemas.Alert{ID: "d-1", Time: t0.Add(4 * time.Minute), Device: "d-2", Severity: schemas.SeverityLow}
	if inc := g.Add(&late, ""); inc.ID != ID("a-1") || inc.Alerts != 5 {
		t.Errorf("d-2's next alert joined %s (%d alerts), want %s", inc.ID, inc.Alerts, ID("a-1"))
	}
}

// TestClassAlertJoinsItsTenant: a device class's alert (acme/camera/cx-200)
// joins the incident of its tenant's alert (acme), whichever comes first; a
// class alert of another tenant's class does not, nor one without a tenant
// (each with another reason: not one campaign signature).
func TestClassAlertJoinsItsTenant(t *testing.T) {
	tenant := schemas.Alert{ID: "t-1", Time: t0, EntityKind: schemas.EntityTenant, Entity: "acme",
		Severity: schemas.SeverityMedium, Reasons: []schemas.Explanation{{Detector: "entity", Reason: "tenant_auth_failures"}}}
	class := schemas.Alert{ID: "c-1", Time: t0.Add(30 * time.Second), EntityKind: schemas.EntityClass, Entity: "acme/camera/cx-200",
		Tenant: "acme", Severity: schemas.SeverityMedium, Reasons: []schemas.Explanation{{Detector: "entity", Reason: "class_auth_failures"}}}
	other := class
	// Other reasons: the same reason on the same (empty) command is one
	// campaign signature, which groups alerts whatever their entity.
	other.ID, other.Entity, other.Tenant = "c-2", "globex/camera/cx-200", "globex"
	other.Reasons = []schemas.Explanation{{Detector: "entity", Reason: "class_rate_spike"}}
	noTenant := class
	noTenant.ID, noTenant.Entity, noTenant.Tenant = "c-3", "camera/cx-200", ""
	noTenant.Reasons = []schemas.Explanation{{Detector: "entity", Reason: "class_client_errors"}}
	for _, classFirst := range []bool{true, false} {
		g := New(Config{})
		order := []*schemas.Alert{&tenant, &class, &other, &noTenant}
		if classFirst {
			order = []*schemas.Alert{&class, &other, &noTenant, &tenant}
		}
		var incs = map[string]string{} // alert id -> incident id
		for _, a := range order {
			incs[a.ID] = g.Add(a, "").ID
		}
		if s := g.Stats(); s.Open != 3 {
			t.Errorf("class first %v: %d incidents open, want 3 (acme's, globex's class, the tenantless class)", classFirst, s.Open)
		}
		if !classFirst && incs["c-1"] != incs["t-1"] {
			t.Errorf("class first %v: the class alert opened %s, not its tenant's %s", classFirst, incs["c-1"], incs["t-1"])
		}
		if incs["c-2"] == incs["c-1"] || incs["c-3"] == incs["c-1"] {
			t.Errorf("class first %v: other classes joined acme's: %v", classFirst, incs)
		}
	}
}
