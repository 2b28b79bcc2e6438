package entity

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// classNames are the six device classes of newClassFleet's tenant acme, a
// hundred devices each.
var classNames = []string{"thermostat/t-100", "camera/cx-200", "smart_lock/l-7", "meter/m-300", "vehicle/v-9", "camera/cx-100"}

// newClassFleet is a tenant fleet of 600 devices, device d of class
// classNames[d/100].
func newClassFleet(t *testing.T, owners int, cfg Config) *tenantFleet {
	f := newFleetConfig(t, 600, owners, cfg)
	f.classes = map[uint64][]byte{}
	for d := range f.devices {
		f.classes[mix(uint64(d)+1)] = []byte(classNames[d/100])
	}
	return f
}

func (f *tenantFleet) alertsOf(kind string) []schemas.Alert {
	var out []schemas.Alert
	for _, a := range f.r.alerts {
		if a.EntityKind == kind {
			out = append(out, a)
		}
	}
	return out
}

// TestClassSpreadThin: a credential attack spread thin over one class of a
// tenant (30 of its 100 cameras cx-200, of 600 devices, each fail two logins,
// every attempt from its own new address over 30 networks) is too thin for
// the addresses (1 identity each), the networks (2) and the tenant (30
// devices, under its floor of 50), and raises a class alert naming the
// class with the distinct devices observed and its usual level (and its
// tenant, whose incident it joins), and no
// decision (a class is a tenant's devices, never blocked). With class
// judging off (Config.NoClass), the attack raises nothing.
func TestClassSpreadThin(t *testing.T) {
	for _, owners := range []int{1, 2} {
		t.Run(fmt.Sprintf("owners=%d", owners), func(t *testing.T) {
			f := newClassFleet(t, owners, Config{})
			classSpreadThin(f)
			got := f.alertsOf(schemas.EntityClass)
			if len(got) == 0 {
				t.Fatalf("no class alert for 30 cameras failing auth; alerts %+v", f.r.alerts)
			}
			for _, a := range f.r.alerts {
				if a.EntityKind != schemas.EntityClass {
					t.Errorf("alert on %s %s (%s): only the class sees the attack", a.EntityKind, a.Entity, Sentence(&a))
				}
			}
			a := got[len(got)-1]
			if a.Entity != "acme/camera/cx-200" || a.Reasons[0].Reason != ReasonClassAuthFailures || a.Tenant != "acme" {
				t.Errorf("alert on %q (tenant %q) for %q, want acme/camera/cx-200 of acme for %s", a.Entity, a.Tenant, a.Reasons[0].Reason, ReasonClassAuthFailures)
			}
			hi := 35.0 // 30 +15%: the sketch's error
			if owners > 1 {
				hi = 60 // estimated from a share
			}
			if obs := a.Reasons[0].Observed; obs < 20 || obs > hi {
				t.Errorf("observed %v distinct failing devices, want between the floor 20 and %v", obs, hi)
			}
			s := Sentence(&a)
			if !strings.HasPrefix(s, "class acme/camera/cx-200: ") || !strings.Contains(s, "distinct devices failed auth") || !strings.Contains(s, "expected about") {
				t.Errorf("explanation %q", s)
			}
			t.Log(s)
			if len(f.r.decisions) != 0 {
				t.Errorf("decisions %+v: a class is never blocked", f.r.decisions)
			}
		})
	}
	t.Run("class off", func(t *testing.T) {
		f := newClassFleet(t, 1, Config{NoClass: true})
		classSpreadThin(f)
		if len(f.r.alerts) != 0 {
			t.Errorf("with class judging off, %d alerts, first %q: the attack should be unseen", len(f.r.alerts), Sentence(&f.r.alerts[0]))
		}
	})
}

// classSpreadThin drives f through an hour of normal traffic, then five
// minutes in which cameras cx-200 100 to 129 each fail two logins, every
// attempt from its own new address (60 addresses, 2 a network).
func classSpreadThin(f *tenantFleet) {
	for m := range 60 { // an hour of normal traffic: 12 windows learned
		f.minute(m, ok200)
	}
	if n := len(f.r.alerts); n != 0 {
		f.t.Fatalf("normal traffic raised %d alerts, first %q", n, Sentence(&f.r.alerts[0]))
	}
	for m := 60; m < 65; m++ {
		f.minute(m, ok200)
		for i := range 12 { // 12 attempts a minute: 30 devices x 2 in 5 minutes
			k := (m-60)*12 + i
			victim := 100 + k/2
			ip := netip.AddrFrom4([4]byte{198, 18, byte(k % 30), byte(k/30 + 1)})
			at := t0 + int64(m)*int64(time.Minute) + int64(i)*int64(4*time.Second)
			f.step(ip, mix(uint64(victim)+1), at, 401, schemas.AuthFailed)
		}
	}
}

// TestClassBackendIncident: 30% of every device's calls get 503 for five
// minutes, fleet-wide, from the usual addresses; then the authentication
// backend fails every camera cx-200 (401) for five minutes from their usual
// addresses; then every device of the tenant. None is an attack: no class
// (nor tenant) alert.
func TestClassBackendIncident(t *testing.T) {
	f := newClassFleet(t, 1, Config{})
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
		f.minute(m, func(d int) uint16 {
			if d/100 == 1 {
				return 401
			}
			return 200
		})
	}
	for m := 80; m < 90; m++ {
		f.minute(m, ok200)
	}
	for m := 90; m < 95; m++ {
		f.minute(m, func(int) uint16 { return 401 })
	}
	for _, a := range f.r.alerts {
		if a.EntityKind == schemas.EntityClass || a.EntityKind == schemas.EntityTenant {
			t.Errorf("a backend incident raised %q", Sentence(&a))
		}
	}
}

// TestClassFlood: a flood spread over one class (500 extra requests a
// minute for five minutes, sent to its 100 meters m-300 in turn from 250
// addresses, 10 each) is five times the class's own rate but well within
// the tenant's band (600 a minute): a class rate alert on the meters, no
// tenant alert, no decision on the class.
func TestClassFlood(t *testing.T) {
	f := newClassFleet(t, 1, Config{})
	for m := range 60 {
		f.minute(m, ok200)
	}
	for m := 60; m < 65; m++ {
		f.minute(m, ok200)
		for i := range 500 {
			k := (m-60)*500 + i
			ip := netip.AddrFrom4([4]byte{192, 0, 2 + byte(k/10/250), byte(k / 10 % 250)})
			at := t0 + int64(m)*int64(time.Minute) + int64(i)*int64(100*time.Millisecond)
			f.step(ip, mix(uint64(300+k%100)+1), at, 200, schemas.AuthOK)
		}
	}
	if got := f.alertsOf(schemas.EntityTenant); len(got) != 0 {
		t.Errorf("a flood over one class raised a tenant alert: %q", Sentence(&got[0]))
	}
	got := f.alertsOf(schemas.EntityClass)
	if len(got) == 0 {
		t.Fatalf("no class alert for a flood of five times the meters' rate; alerts %d", len(f.r.alerts))
	}
	a := got[0]
	if a.Entity != "acme/meter/m-300" || a.Reasons[0].Reason != ReasonClassRate {
		t.Fatalf("class alert %q (%s), want acme/meter/m-300 for %s", a.Entity, a.Reasons[0].Reason, ReasonClassRate)
	}
	if e := a.Reasons[0].Expected; e < 450 || e > 550 {
		t.Errorf("expected %v requests in 5m, want the meters' usual 500", e)
	}
	s := Sentence(&a)
	if !strings.HasPrefix(s, "class acme/meter/m-300: ") || !strings.Contains(s, "requests in 5m; expected about 5") {
		t.Errorf("explanation %q", s)
	}
	t.Log(s)
	for _, d := range f.r.decisions {
		if d.Scope == "" || strings.Contains(d.Value, "meter") {
			t.Errorf("decision on the class: %+v", d)
		}
	}
}

// TestObsSize: an observation is two cache lines (it is copied into each
// owner's input, and batched).
func TestObsSize(t *testing.T) {
	if n := unsafe.Sizeof(Obs{}); n != 128 {
		t.Errorf("an Obs is %d bytes, want 128", n)
	}
}

// TestObserveDoesNotAllocate: taking an event's observation (with its
// tenant and class) and observing it allocates nothing, the observation on
// the caller's stack: nothing of the owner keeps a reference to it.
func TestObserveDoesNotAllocate(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	emit := func(*schemas.Alert, *schemas.Decision) {}
	ev := schemas.Event{ClientIP: netip.MustParseAddr("203.0.113.9"), Tenant: []byte("acme"), Class: []byte("camera/cx-200"),
		Protocol: schemas.ProtoHTTP, Status: 200, DeviceKey: 7}
	ev.ClassKey = schemas.Hash2(ev.Tenant, ev.Class)
	i := int64(0)
	step := func() {
		i++
		ev.Time, ev.Seq, ev.ID = t0+i*int64(time.Second), uint64(i), uint64(i)
		ob, _ := ObsOf(&ev)
		o.Observe(&ob, emit)
	}
	step()
	if n := testing.AllocsPerRun(2000, step); n != 0 {
		t.Errorf("%v allocations per observation, want 0", n)
	}
}

// TestClassRedeliveryLearnsOnce: observations redelivered after a class
// record learned them (a crash before the ack) change nothing in it: the
// class counts each request once, as the tenant does.
func TestClassRedeliveryLearnsOnce(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	obs := make([]Obs, 50)
	for i := range obs {
		ev := schemas.Event{ClientIP: netip.AddrFrom4([4]byte{203, 0, 113, byte(i%20 + 1)}), Tenant: []byte("acme"),
			Class: []byte("meter/m-300"), Protocol: schemas.ProtoHTTP, Status: 200, DeviceKey: mix(uint64(i%20) + 1),
			Time: t0 + int64(i)*int64(10*time.Second), Seq: uint64(i + 1), ID: uint64(i + 1)}
		ev.ClassKey = schemas.Hash2(ev.Tenant, ev.Class)
		obs[i], _ = ObsOf(&ev)
	}
	o.ObserveBatch(obs[:30], r.emit)
	key, alt := obs[0].classKey()
	rec, ok := o.table.Lookup(key, alt)
	if !ok {
		t.Fatal("no class record after 30 observations")
	}
	before := string(rec)
	o.ObserveBatch(obs[:30], r.emit) // redelivered
	if rec, _ := o.table.Lookup(key, alt); string(rec) != before {
		t.Error("a redelivery changed the class record")
	}
	o.ObserveBatch(obs[30:], r.emit)
	rec, _ = o.table.Lookup(key, alt)
	if rec[offKind] != kindClass {
		t.Fatalf("record kind %d, want kindClass", rec[offKind])
	}
	// 500 s of requests, one 5-minute window rolled: 30 in the first,
	// 20 in the second.
	if n := binary.LittleEndian.Uint32(rec[offEvents:]); n != 20 {
		t.Errorf("%d requests in the open window, want 20 (each once)", n)
	}
	if l := math.Float32frombits(binary.LittleEndian.Uint32(rec[offLEvents:])); l != 30 {
		t.Errorf("learned %v requests a window, want the first window's 30", l)
	}
}
