package entity

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/schemas"
)

// tenantFleet drives one tenant's fleet through an owner: devices devices,
// each from its own usual address (in 203.0.0.0/16, 50 a /24).
type tenantFleet struct {
	t       *testing.T
	owners  []*Owner
	r       results
	seq     uint64
	devices int
	geo     *geoip.Reader // enriches each event (its ASN), when set
	// classes holds the device class of a device key (class_test.go); a
	// device not in it has none.
	classes map[uint64][]byte
}

// newTenantFleet drives owners owners (1: newOwner's).
func newTenantFleet(t *testing.T, devices, owners int) *tenantFleet {
	return newFleetConfig(t, devices, owners, Config{})
}

// newFleetConfig is newTenantFleet with owners of policy cfg.
func newFleetConfig(t *testing.T, devices, owners int, cfg Config) *tenantFleet {
	f := &tenantFleet{t: t, devices: devices}
	for range owners {
		dcfg := decide.DefaultConfig()
		eng, err := decide.NewEngine(dcfg, decide.NewLimiter(dcfg.MaxBlocksPerMinute))
		if err != nil {
			t.Fatal(err)
		}
		o, err := NewOwner(cfg, owners, eng)
		if err != nil {
			t.Fatal(err)
		}
		f.owners = append(f.owners, o)
	}
	return f
}

var tenantAcme = []byte("acme")

func (f *tenantFleet) step(ip netip.Addr, dev uint64, at int64, status uint16, auth schemas.AuthOutcome) {
	f.seq++
	var ev schemas.Event
	ev.ClientIP, ev.Tenant, ev.Protocol = ip, tenantAcme, schemas.ProtoHTTP
	ev.DeviceKey, ev.Time, ev.Seq, ev.ID, ev.Status, ev.Auth = dev, at, f.seq, f.seq, status, auth
	if c := f.classes[dev]; c != nil {
		ev.Class, ev.ClassKey = c, schemas.Hash2(ev.Tenant, c)
	}
	if f.geo != nil {
		f.geo.Enrich(&ev)
	}
	ob, ok := ObsOf(&ev)
	if !ok {
		f.t.Fatalf("no observation of %s", ip)
	}
	f.owners[Shard(&ob, len(f.owners))].Observe(&ob, f.r.emit)
}

func usualAddr(d int) netip.Addr {
	return netip.AddrFrom4([4]byte{203, 0, byte(d / 50), byte(d%50 + 1)})
}

// minute sends one request of every device at minute m (from t0), each
// from its usual address, with status(d) and its auth outcome.
func (f *tenantFleet) minute(m int, status func(d int) uint16) {
	for d := range f.devices {
		at := t0 + int64(m)*int64(time.Minute) + int64(d)*int64(10*time.Millisecond)
		s := status(d)
		auth := schemas.AuthOK
		if s == 401 {
			auth = schemas.AuthFailed
		}
		f.step(usualAddr(d), mix(uint64(d)+1), at, s, auth)
	}
}

func ok200(int) uint16 { return 200 }

func (f *tenantFleet) tenantAlerts() []schemas.Alert {
	var out []schemas.Alert
	for _, a := range f.r.alerts {
		if a.EntityKind == schemas.EntityTenant {
			out = append(out, a)
		}
	}
	return out
}

// TestTenantSpreadThin: a credential attack spread thin over a tenant's
// fleet (300 of its 600 devices each see 2 failed logins, from 600 new
// addresses over 60 networks) raises no address or network finding (each
// address fails for 1 identity, each network for 10), but a tenant alert
// naming the tenant with the distinct devices observed and its usual level,
// and no decision: a tenant is never blocked.
func TestTenantSpreadThin(t *testing.T) {
	for _, owners := range []int{1, 4} {
		t.Run(fmt.Sprintf("owners=%d", owners), func(t *testing.T) { testTenantSpreadThin(t, owners) })
	}
}

// testTenantSpreadThin is TestTenantSpreadThin with owners owners, each
// judging its share of the tenant.
func testTenantSpreadThin(t *testing.T, owners int) {
	f := newTenantFleet(t, 600, owners)
	for m := range 60 { // an hour of normal traffic: 12 windows learned
		f.minute(m, ok200)
	}
	if n := len(f.r.alerts); n != 0 {
		t.Fatalf("normal traffic raised %d alerts, first %+v", n, f.r.alerts[0])
	}
	for m := 60; m < 65; m++ {
		f.minute(m, ok200)
		for i := range 120 { // 120 attempts a minute: 300 devices x 2 in 5 minutes
			k := (m-60)*120 + i
			victim := k / 2
			ip := netip.AddrFrom4([4]byte{198, 18, byte(k % 60), byte(k/60 + 1)}) // 600 addresses, 10 a network
			at := t0 + int64(m)*int64(time.Minute) + int64(i)*int64(500*time.Millisecond)
			f.step(ip, mix(uint64(victim)+1), at, 401, schemas.AuthFailed)
		}
	}
	got := f.tenantAlerts()
	if len(got) == 0 {
		t.Fatalf("no tenant alert for 300 devices failing auth; alerts %+v", f.r.alerts)
	}
	for _, a := range f.r.alerts {
		if a.EntityKind != schemas.EntityTenant {
			t.Errorf("alert on %s %s (%s): no address or network carries the attack", a.EntityKind, a.Entity, a.Reasons[0].Reason)
		}
	}
	a := got[len(got)-1]
	if a.Entity != "acme" || a.Reasons[0].Reason != ReasonTenantAuthFailures {
		t.Errorf("alert on %q for %q, want tenant acme for %s", a.Entity, a.Reasons[0].Reason, ReasonTenantAuthFailures)
	}
	hi := 345.0 // 300 +15%: the sketch's error
	if owners > 1 {
		hi = 480 // estimated from a share
	}
	if obs := a.Reasons[0].Observed; obs < 50 || obs > hi {
		t.Errorf("observed %v distinct failing devices, want between the floor and %v", obs, hi)
	}
	s := Sentence(&a)
	if !strings.HasPrefix(s, "tenant acme: ") || !strings.Contains(s, "failed auth") || !strings.Contains(s, "expected about") {
		t.Errorf("explanation %q", s)
	}
	if len(f.r.decisions) != 0 {
		t.Errorf("decisions %+v: a tenant is never blocked", f.r.decisions)
	}
}

// TestTenantBackendIncident: 30% of every device's calls get 503 for five
// minutes, fleet-wide, from the usual addresses; then the authentication
// backend fails every device (401) for five minutes from the usual
// addresses. Neither is an attack: no tenant alert.
func TestTenantBackendIncident(t *testing.T) {
	f := newTenantFleet(t, 600, 1)
	for m := range 60 {
		f.minute(m, ok200)
	}
	for m := 60; m < 65; m++ {
		f.minute(m, func(d int) uint16 {
			if (d+m)%10 < 3 {
				return 503
			}
			return 200
		})
	}
	for m := 65; m < 75; m++ {
		f.minute(m, ok200)
	}
	for m := 75; m < 80; m++ {
		f.minute(m, func(int) uint16 { return 401 })
	}
	if got := f.tenantAlerts(); len(got) != 0 {
		t.Errorf("a backend incident raised %d tenant alerts, first %q", len(got), Sentence(&got[0]))
	}
}

// TestTenantDiurnal: a day of diurnal traffic (the rate swings fourfold
// over the day), with a device failing auth now and then and devices moving
// to a new address now and then, raises no tenant alert; a tenant-wide
// flood (ten times the evening rate) then does.
func TestTenantDiurnal(t *testing.T) {
	f := newTenantFleet(t, 200, 1)
	rnd := uint64(1)
	next := func() uint64 { rnd = mix(rnd); return rnd }
	for m := range 24 * 60 {
		rate := 1.5 + math.Sin(2*math.Pi*float64(m)/(24*60)) // 0.5 to 2.5 requests a device-minute
		for d := range f.devices {
			n := int(rate)
			if float64(next()%1000)/1000 < rate-float64(n) {
				n++
			}
			for i := range n {
				at := t0 + int64(m)*int64(time.Minute) + int64(d)*int64(100*time.Millisecond) + int64(i)*int64(20*time.Second)
				ip := usualAddr(d)
				if next()%500 == 0 { // a new lease
					ip = netip.AddrFrom4([4]byte{100, 64, byte(next()), byte(next())})
				}
				status, auth := uint16(200), schemas.AuthOK
				if next()%200 == 0 {
					status, auth = 401, schemas.AuthFailed
				}
				f.step(ip, mix(uint64(d)+1), at, status, auth)
			}
		}
	}
	if got := f.tenantAlerts(); len(got) != 0 {
		t.Fatalf("a day of diurnal traffic raised %d tenant alerts, first %q", len(got), Sentence(&got[0]))
	}
	m0 := 24 * 60
	for s := range 5 * 60 { // 5 minutes of 50 requests a second, over the devices: 10 times the rate
		for d := range 50 {
			at := t0 + int64(m0)*int64(time.Minute) + int64(s)*int64(time.Second) + int64(d)*int64(time.Millisecond)
			f.step(usualAddr((s*50+d)%f.devices), mix(uint64((s*50+d)%f.devices)+1), at, 200, schemas.AuthOK)
		}
	}
	got := f.tenantAlerts()
	if len(got) == 0 || got[0].Reasons[0].Reason != ReasonTenantRate {
		t.Fatalf("a tenant-wide flood raised %+v, want a %s alert", got, ReasonTenantRate)
	}
	if len(f.r.decisions) != 0 {
		t.Errorf("decisions %+v: a tenant is never blocked", f.r.decisions)
	}
}

// TestTenantClientErrors: one device's enumeration (404s) raises no tenant
// alert (its own detectors judge it); 404s spread over 200 of the tenant's
// devices do, and are not blocked.
func TestTenantClientErrors(t *testing.T) {
	f := newTenantFleet(t, 600, 1)
	for m := range 60 {
		f.minute(m, ok200)
	}
	for m := 60; m < 65; m++ { // one device: 100 404s a minute
		f.minute(m, ok200)
		for i := range 100 {
			f.step(usualAddr(7), mix(8), t0+int64(m)*int64(time.Minute)+int64(i)*int64(500*time.Millisecond), 404, schemas.AuthOK)
		}
	}
	if got := f.tenantAlerts(); len(got) != 0 {
		t.Fatalf("one device's enumeration raised a tenant alert: %q", Sentence(&got[0]))
	}
	for m := 70; m < 75; m++ { // 200 devices: each 404s every call
		f.minute(m, func(d int) uint16 {
			if d%3 == 0 {
				return 404
			}
			return 200
		})
	}
	got := f.tenantAlerts()
	if len(got) == 0 || got[0].Reasons[0].Reason != ReasonTenantErrors || got[0].Entity != "acme" {
		t.Fatalf("404s on 200 devices raised %+v, want a %s alert on acme", got, ReasonTenantErrors)
	}
	if len(f.r.decisions) != 0 {
		t.Errorf("decisions %+v: a tenant is never blocked", f.r.decisions)
	}
}

// TestAuthOutageBlocksNoNetwork: when the authentication backend fails
// every device (401) for five minutes, each from its usual address, the
// fleet's own networks are neither found stuffing nor blocked: a failure
// from a usual address does not count toward its network's distinct
// failing devices.
func TestAuthOutageBlocksNoNetwork(t *testing.T) {
	f := newTenantFleet(t, 600, 1)
	for m := range 60 {
		f.minute(m, ok200)
	}
	for m := 75; m < 80; m++ {
		f.minute(m, func(int) uint16 { return 401 })
	}
	for _, d := range f.r.decisions {
		t.Errorf("an authentication outage made a decision: %s %s %s", d.Action, d.Scope, d.Value)
	}
	for _, a := range f.r.alerts {
		if a.EntityKind == schemas.EntityPrefix {
			t.Errorf("an authentication outage alerted on the fleet's network: %s", Sentence(&a))
		}
	}
}

// TestTenantKeyCache: an owner's cache of tenant keys (tenantKeyOf) returns
// each tenant's own key while more tenants than it has slots interleave,
// including ids that differ only in their last byte or in length, with other
// bytes past the id in the observation.
func TestTenantKeyCache(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	ids := []string{"acme", "acmf", "acme-eu", "a", "b", "northstar", "sakura-iot", "hausnetz",
		"maison-connectee", "northstar-eu", "northstar-us", "x" + strings.Repeat("y", MaxKeyText-2) + "z", "xx", "xyz"}
	for round := range 3 {
		for i := range ids {
			id := ids[i] // every id, forwards and then backwards
			if round%2 == 1 {
				id = ids[len(ids)-1-i]
			}
			var ob Obs
			for j := range ob.Key {
				ob.Key[j] = byte('a' + (i+j)%26) // bytes past KeyLen are not the tenant's
			}
			ob.KeyLen = uint8(copy(ob.Key[:], id))
			wk, wa := ob.tenantKey()
			if k, a := o.tenantKeyOf(&ob); k != wk || a != wa {
				t.Fatalf("round %d: the cached key of tenant %q is another tenant's", round, id)
			}
		}
	}
}
