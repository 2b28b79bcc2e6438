package incident

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// The class the scenarios below are about, as a class alert names it
// (schemas.ClassEntity) and as its devices' alerts carry it.
const (
	camTenant = "acme"
	camClass  = "camera/cx-200"
	camEntity = "acme/camera/cx-200"
)

// floodOverClass is a distributed flood over 40 cameras of one class, as the
// pipeline alerts on it: each camera's rate_spike alert from a new address
// of its own (every one in another network), the address's new_ip_wave
// alert for every fourth, and the class's class_rate_spike alert 3 minutes
// in. No address, network, key, device or campaign signature is shared by
// the class alert and the others.
func floodOverClass() (devices, addresses []schemas.Alert, class schemas.Alert) {
	for i := range 40 {
		at := t0.Add(time.Duration(i) * 5 * time.Second)
		ip := fmt.Sprintf("100.%d.%d.7", 64+i, i)
		devices = append(devices, schemas.Alert{ID: fmt.Sprintf("a-cam-%d", i), Time: at, Tenant: camTenant,
			Device: fmt.Sprintf("cam-%03d", i), Class: camClass, ClientIP: ip, Command: "GET /v1/stream",
			Score: 0.8, Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "volume", Reason: "rate_spike"}}})
		if i%4 == 0 {
			addresses = append(addresses, schemas.Alert{ID: fmt.Sprintf("e-ip-%d", i), Time: at.Add(time.Second), Tenant: camTenant,
				EntityKind: schemas.EntityIP, Entity: ip, ClientIP: ip, Score: 0.95, Severity: schemas.SeverityHigh,
				Reasons: []schemas.Explanation{{Detector: "entity", Reason: "new_ip_wave"}}})
		}
	}
	class = schemas.Alert{ID: "c-cam", Time: t0.Add(3 * time.Minute), Tenant: camTenant, EntityKind: schemas.EntityClass,
		Entity: camEntity, Score: 0.9, Severity: schemas.SeverityHigh,
		Reasons: []schemas.Explanation{{Detector: "entity", Reason: "class_rate_spike"}}}
	return devices, addresses, class
}

// TestClassAlertJoinsTheFloodOnItsDevices: a flood over one class's devices
// from many addresses is one incident holding the 40 device alerts, the 10
// address alerts and the class's alert, whether the class alert comes
// first, in the middle or last; it counts the class among its entities.
func TestClassAlertJoinsTheFloodOnItsDevices(t *testing.T) {
	devices, addresses, class := floodOverClass()
	for _, classAt := range []int{0, 25, 50} { // the class alert's place among the 50 others
		others := append(slices.Clone(devices), addresses...)
		order := append(slices.Clone(others[:classAt]), class)
		order = append(order, others[classAt:]...)
		g := New(Config{})
		incs := map[string]bool{}
		var last *schemas.Incident
		for i := range order {
			last = g.Add(&order[i], "")
		}
		g.OnClose(func(inc *schemas.Incident) { incs[inc.ID] = true })
		g.Close()
		if len(incs) != 1 {
			t.Errorf("class alert %d of 51: %d incidents, want 1: %v", classAt+1, len(incs), incs)
			continue
		}
		// Entities: 40 addresses, their 40 networks, the class and its tenant.
		if last.ID != ID("a-cam-0") || last.Alerts != 51 || last.Devices != 40 || !slices.Contains(last.Reasons, "entity/class_rate_spike") ||
			last.EntityCount != 82 {
			t.Errorf("class alert %d of 51: %+v", classAt+1, last)
		}
	}
}

// TestDevicesOfOneClassStayApart: two unrelated alerts of two cameras of one
// class a minute apart (other addresses, networks, keys, reasons and
// commands) are two incidents: devices of one class do not join through
// their class, only through their class's alert.
func TestDevicesOfOneClassStayApart(t *testing.T) {
	a := schemas.Alert{ID: "a-1", Time: t0, Tenant: camTenant, Device: "cam-001", Class: camClass, ClientIP: "192.0.2.10",
		Command: "GET /v1/config", Severity: schemas.SeverityMedium, Reasons: []schemas.Explanation{{Detector: "geo", Reason: "new_country"}}}
	b := schemas.Alert{ID: "b-1", Time: t0.Add(time.Minute), Tenant: camTenant, Device: "cam-002", Class: camClass, ClientIP: "203.0.113.20",
		Command: "POST /v1/firmware", Severity: schemas.SeverityMedium, Reasons: []schemas.Explanation{{Detector: "command", Reason: "new_command"}}}
	for _, order := range [][]*schemas.Alert{{&a, &b}, {&b, &a}} {
		g := New(Config{})
		x, y := g.Add(order[0], ""), g.Add(order[1], "")
		if x.ID == y.ID || g.Stats().Open != 2 {
			t.Errorf("%s then %s: incidents %s and %s, %d open; want two", order[0].ID, order[1].ID, x.ID, y.ID, g.Stats().Open)
		}
		if len(y.Entities) != 2 || slices.Contains(y.Entities, "class:"+camEntity) {
			t.Errorf("a device alert's incident names %v; want its address and network, not its class", y.Entities)
		}
	}
}

// TestClassAlertReachesItsSpanAndClassOnly: a class alert joins the
// incidents of its own class's device alerts within the campaign span of it
// (every one of them: within its span, they become one incident), not those
// of another class or tenant, nor those further away, whichever comes first.
func TestClassAlertReachesItsSpanAndClassOnly(t *testing.T) {
	class := schemas.Alert{ID: "c-1", Time: t0, Tenant: camTenant, EntityKind: schemas.EntityClass, Entity: camEntity,
		Severity: schemas.SeverityHigh, Reasons: []schemas.Explanation{{Detector: "entity", Reason: "class_rate_spike"}}}
	dev := func(id string, at time.Duration, tenant, class string) *schemas.Alert {
		return &schemas.Alert{ID: id, Time: t0.Add(at), Tenant: tenant, Device: "dev-" + id, Class: class, ClientIP: "198.18." + id[2:] + ".1",
			Command: "GET /" + id, Severity: schemas.SeverityLow, Reasons: []schemas.Explanation{{Detector: "geo", Reason: "r-" + id}}}
	}
	near := []*schemas.Alert{dev("d-1", -9*time.Minute, camTenant, camClass), dev("d-2", 4*time.Minute, camTenant, camClass)}
	apart := []*schemas.Alert{
		dev("d-3", 11*time.Minute, camTenant, camClass),     // beyond the span
		dev("d-4", -11*time.Minute, camTenant, camClass),    // before it
		dev("d-5", time.Minute, camTenant, "camera/cx-300"), // another class
		dev("d-6", time.Minute, "globex", camClass),         // another tenant's
		dev("d-7", time.Minute, "", camClass),               // no tenant
	}
	all := append(append([]*schemas.Alert{&class}, near...), apart...)
	for _, classFirst := range []bool{true, false} {
		order := all
		if !classFirst {
			order = append(slices.Clone(all[1:]), &class)
		}
		g := New(Config{})
		got := map[string]string{}
		merged := map[string]string{}
		g.OnRetire(func(inc *schemas.Incident) { merged[inc.ID] = inc.MergedInto })
		for _, a := range order {
			got[a.ID] = g.Add(a, "").ID
		}
		for a, id := range got {
			for next, ok := merged[id]; ok; next, ok = merged[id] {
				id = next
			}
			got[a] = id
		}
		for _, a := range near {
			if got[a.ID] != got["c-1"] {
				t.Errorf("class first %v: %s (%v from the class alert) is in %s, the class alert in %s", classFirst, a.ID, a.Time.Sub(t0), got[a.ID], got["c-1"])
			}
		}
		for _, a := range apart {
			if got[a.ID] == got["c-1"] {
				t.Errorf("class first %v: %s (%v, %s/%s) joined the class alert's incident", classFirst, a.ID, a.Time.Sub(t0), a.Tenant, a.Class)
			}
		}
		if s := g.Stats(); s.Open != 1+len(apart) {
			t.Errorf("class first %v: %d open, want %d", classFirst, s.Open, 1+len(apart))
		}
	}
}
