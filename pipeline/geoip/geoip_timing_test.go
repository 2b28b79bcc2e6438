package geoip_test

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

func BenchmarkLookupCached(b *testing.B) {
	r := open(b, cityDB(b))
	ip := netip.MustParseAddr("84.128.7.9")
	r.Lookup(ip)
	b.ReportAllocs()
	for b.Loop() {
		r.Lookup(ip)
	}
}

func BenchmarkEnrichCached(b *testing.B) {
	r := open(b, cityDB(b))
	ev := schemas.Event{ClientIP: netip.MustParseAddr("2400:4050:1::42")}
	b.ReportAllocs()
	for b.Loop() {
		ev.Country, ev.ASN, ev.Lat, ev.Lon = schemas.Country{}, 0, 0, 0
		r.Enrich(&ev)
	}
}

// BenchmarkLookupMiss measures a lookup that walks the database (a new IP each time).
func BenchmarkLookupMiss(b *testing.B) {
	r := open(b, cityDB(b))
	base := netip.MustParseAddr("84.128.0.0").As4()
	var n uint32
	b.ReportAllocs()
	for b.Loop() {
		n++
		a := base
		a[2], a[3] = byte(n>>8), byte(n)
		a[1] = 128 + byte(n>>16)
		r.Lookup(netip.AddrFrom4(a))
	}
}
