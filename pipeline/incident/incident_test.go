package incident

import (
	"fmt"
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
func BenchmarkAdd(b *testing.B) {
	g := New(Config{})
	alerts := make([]schemas.Alert, 1024)
	for i := range alerts {
		alerts[i] = stuffing(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		a := alerts[i%len(alerts)]
		a.ID = fmt.Sprint("a-", i)
		g.Add(&a, "")
		i++
	}
}
