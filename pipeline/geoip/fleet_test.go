package geoip_test

import (
	"net/netip"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestSimulatedNetworks builds a City-level database from the simulator's
// networks, as a demo with coordinates would, and checks that Enrich gives a
// gateway log line from any of them its country, ASN and coordinates.
func TestSimulatedNetworks(t *testing.T) {
	nets := sim.Networks()
	rows := make([]network, len(nets))
	for i, n := range nets {
		rows[i] = network{Prefix: n.Prefix.String(), Record: mmdbtype.Map{
			"country":                  mmdbtype.Map{"iso_code": mmdbtype.String(n.Country)},
			"location":                 mmdbtype.Map{"latitude": mmdbtype.Float64(n.Lat), "longitude": mmdbtype.Float64(n.Lon)},
			"autonomous_system_number": mmdbtype.Uint32(n.ASN),
		}}
	}
	r := open(t, writeDB(t, "Fleet-City", rows))
	for _, n := range nets {
		if n.Lat < -90 || n.Lat > 90 || n.Lon < -180 || n.Lon > 180 || (n.Lat == 0 && n.Lon == 0) {
			t.Errorf("%s: coordinates %v,%v", n.Org, n.Lat, n.Lon)
		}
		// The last address of the range: Enrich must not depend on the start.
		a := n.Prefix.Addr().As4()
		host := 32 - n.Prefix.Bits()
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | (1<<host - 2)
		ev := schemas.Event{ClientIP: netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})}
		r.Enrich(&ev)
		if ev.Country.String() != n.Country || ev.ASN != n.ASN || ev.Lat != n.Lat || ev.Lon != n.Lon {
			t.Errorf("%s (%s): enriched to %s AS%d %v,%v; want %s AS%d %v,%v", n.Org, ev.ClientIP,
				ev.Country, ev.ASN, ev.Lat, ev.Lon, n.Country, n.ASN, n.Lat, n.Lon)
		}
	}
}
