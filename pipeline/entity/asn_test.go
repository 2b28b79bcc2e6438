package entity

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/iotwatch/iotwatch/internal/geoiptest"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/schemas"
)

// asnDB writes a GeoLite2-ASN database: 45.76.0.0/16 is AS64500
// (ExampleHost, a hosting provider), 203.0.0.0/18 (the fleet's usual
// addresses, usualAddr) AS64501 (FleetCarrier).
func asnDB(t *testing.T) *geoip.Reader {
	t.Helper()
	path := geoiptest.Write(t, "GeoLite2-ASN", []geoiptest.Network{
		{Prefix: "45.76.0.0/16", Record: mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(64500),
			"autonomous_system_organization": mmdbtype.String("ExampleHost")}},
		{Prefix: "203.0.0.0/18", Record: mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(64501),
			"autonomous_system_organization": mmdbtype.String("FleetCarrier")}},
	})
	r, err := geoip.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func (f *tenantFleet) kindAlerts(kind string) []schemas.Alert {
	var out []schemas.Alert
	for _, a := range f.r.alerts {
		if a.EntityKind == kind {
			out = append(out, a)
		}
	}
	return out
}

// TestASNStuffingSpreadOverNetworks: credential stuffing from one hosting AS
// spread over 41 of its /24s (2 addresses each, each failing for 2 or 3
// devices: 212 devices) is too thin for any address or network, but the AS
// is alerted, named from the database, with its distinct devices and
// networks, and never blocked. With one owner and with four (each judging
// its share).
func TestASNStuffingSpreadOverNetworks(t *testing.T) {
	for _, owners := range []int{1, 4} {
		t.Run(fmt.Sprintf("owners=%d", owners), func(t *testing.T) {
			f := newTenantFleet(t, 300, owners)
			f.geo = asnDB(t)
			for _, o := range f.owners {
				o.NameAS(f.geo.ASOrg)
			}
			for m := range 30 {
				f.minute(m, ok200)
			}
			if n := len(f.r.alerts); n != 0 {
				t.Fatalf("normal traffic raised %d alerts, first %+v", n, f.r.alerts[0])
			}
			for m := 30; m < 35; m++ {
				f.minute(m, ok200)
			}
			for k := range 212 { // victim k, over 5 minutes, from address k%82 of 41 networks
				a := k % 82
				ip := netip.AddrFrom4([4]byte{45, 76, byte(a / 2), byte(a%2 + 10)})
				at := t0 + 30*int64(time.Minute) + int64(k)*int64(time.Second)
				f.step(ip, mix(uint64(k)+1), at, 401, schemas.AuthFailed)
			}
			got := f.kindAlerts(schemas.EntityASN)
			if len(got) == 0 {
				t.Fatalf("no AS alert for 212 devices failing from 41 networks of one AS; alerts %d", len(f.r.alerts))
			}
			for _, a := range f.r.alerts {
				if a.EntityKind == schemas.EntityIP || a.EntityKind == schemas.EntityPrefix {
					t.Errorf("alert on %s %s (%s): each address and network is too thin", a.EntityKind, a.Entity, a.Reasons[0].Reason)
				}
			}
			a := got[len(got)-1]
			if a.Entity != "AS64500 (ExampleHost)" || a.Reasons[0].Reason != ReasonASNAuthFailures {
				t.Errorf("alert on %q for %q, want AS64500 (ExampleHost) for %s", a.Entity, a.Reasons[0].Reason, ReasonASNAuthFailures)
			}
			lo, hi := 30.0, 245.0 // the floor; 212 + 15%: the sketch's error
			if owners > 1 {
				hi = 400 // estimated from a share
			}
			if obs := a.Reasons[0].Observed; obs < lo || obs > hi {
				t.Errorf("observed %v distinct failing devices, want between %v and %v", obs, lo, hi)
			}
			s := Sentence(&a)
			t.Log(s)
			if !strings.HasPrefix(s, "AS64500 (ExampleHost) failed auth for ") || !strings.Contains(s, " networks in 5m; expected <= ") {
				t.Errorf("explanation %q", s)
			}
			for _, d := range f.r.decisions {
				t.Errorf("decision %s %s: no address or network is the attacker alone, and an AS is never blocked", d.Scope, d.Value)
			}
		})
	}
}

// TestASNAuthOutage: the authentication backend fails every device (401)
// for five minutes, each from its usual address in the fleet's carrier AS,
// and devices move to new addresses of that AS now and then: no AS alert.
// Failures from usual addresses are a device failing from where it always
// is, and the carrier's new addresses each address their own device.
func TestASNAuthOutage(t *testing.T) {
	f := newTenantFleet(t, 600, 1)
	f.geo = asnDB(t)
	for m := range 60 {
		f.minute(m, ok200)
		for i := range 10 { // 10 devices a minute on a new lease of the carrier
			d := (m*10 + i) % f.devices
			ip := netip.AddrFrom4([4]byte{203, 0, byte(20 + m%40), byte(i + 1)})
			f.step(ip, mix(uint64(d)+1), t0+int64(m)*int64(time.Minute)+int64(i)*int64(time.Second), 200, schemas.AuthOK)
		}
	}
	for m := 60; m < 65; m++ {
		f.minute(m, func(int) uint16 { return 401 })
	}
	if got := f.kindAlerts(schemas.EntityASN); len(got) != 0 {
		t.Errorf("an authentication outage raised %d AS alerts, first %q", len(got), Sentence(&got[0]))
	}
}

// TestASNRecordRestoresToItsOwner: an AS's record is made with the owner
// route of the address that brought it, so that a checkpoint restores it
// to the owner that judges that address (ShardOf), and it expires after
// the idle TTL like any entity record.
func TestASNRecordRestoresToItsOwner(t *testing.T) {
	f := newTenantFleet(t, 0, 4)
	f.geo = asnDB(t)
	ip := netip.MustParseAddr("45.76.7.9")
	f.step(ip, 1, t0, 401, schemas.AuthFailed)
	key, alt := asnKey(64500)
	found := 0
	for i, o := range f.owners {
		rec, ok := o.Table().Lookup(key, alt)
		if !ok {
			continue
		}
		found++
		if rec[offKind] != kindASN || binary.LittleEndian.Uint32(rec) != recordVersion {
			t.Errorf("owner %d: record kind %d", i, rec[offKind])
		}
		if got := ShardOf(rec, len(f.owners)); got != i {
			t.Errorf("AS record in owner %d restores to owner %d", i, got)
		}
	}
	if found != 1 {
		t.Fatalf("AS record in %d owners, want 1", found)
	}
}
