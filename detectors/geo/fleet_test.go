package geo_test

import (
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/schemas"
)

// learnClass teaches t that n devices of class "meter/x" were seen in country
// and asn, and returns the class key.
func learnClass(t *geo.Stats, prefix string, n int, country string, asn uint32) uint64 {
	var ev schemas.Event
	ev.SetClass([]byte("meter/x"))
	for i := range n {
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("%s-%d", prefix, i)))
		ev.Time = 1736121600e9
		ev.Country, ev.ASN = schemas.Country{country[0], country[1]}, asn
		t.Learn(&ev, nil)
	}
	return ev.ClassKey
}

func TestClassCountryAndASNDevices(t *testing.T) {
	tab := geo.NewStats(detectors.NewClassTable(1024, 1024))
	class := learnClass(tab, "de", 40, "DE", 3320)
	learnClass(tab, "at", 3, "AT", 8447)
	learnClass(tab, "unknown", 5, "\x00\x00", 0) // unknown country and ASN: not learned
	f := func(what string, got, lo, hi float64) {
		t.Helper()
		if !(got >= lo && got <= hi) {
			t.Errorf("%s = %.2f, want in [%v, %v]", what, got, lo, hi)
		}
	}
	other := schemas.Hash2([]byte("acme"), []byte("someone-else"))
	f("DE devices", tab.ClassCountryDevices(class, schemas.Country{'D', 'E'}, other), 30, 50)
	f("AT devices", tab.ClassCountryDevices(class, schemas.Country{'A', 'T'}, other), 2, 4)
	f("FR devices", tab.ClassCountryDevices(class, schemas.Country{'F', 'R'}, other), 0, 0)
	f("AS3320 devices", tab.ClassASNDevices(class, 3320, other), 30, 50)
	f("AS8447 devices", tab.ClassASNDevices(class, 8447, other), 2, 4)
	// Countries and ASNs are kept apart: "DE" is not AS 0x4445.
	f("AS0x4445 devices", tab.ClassASNDevices(class, 'D'<<8|'E', other), 0, 0)
	f("another class", tab.ClassCountryDevices(class^1, schemas.Country{'D', 'E'}, other), 0, 0)
	// A device does not count itself.
	self := schemas.Hash2([]byte("acme"), []byte("at-0"))
	f("AT devices but at-0", tab.ClassCountryDevices(class, schemas.Country{'A', 'T'}, self), 1, 3)
}

func TestClassSnapshotKeepsGeo(t *testing.T) {
	tab := geo.NewStats(detectors.NewClassTable(1024, 1024))
	class := learnClass(tab, "de", 10, "DE", 3320)
	snap := tab.AppendSnapshot(nil)
	tab2 := geo.NewStats(detectors.NewClassTable(1024, 1024))
	if err := tab2.LoadSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	de := schemas.Country{'D', 'E'}
	if a, b := tab.ClassCountryDevices(class, de, 0), tab2.ClassCountryDevices(class, de, 0); a != b || a == 0 {
		t.Errorf("country devices after a snapshot round trip: %v, before %v", b, a)
	}
	if a, b := tab.ClassASNDevices(class, 3320, 0), tab2.ClassASNDevices(class, 3320, 0); a != b || a == 0 {
		t.Errorf("ASN devices after a snapshot round trip: %v, before %v", b, a)
	}
	if err := geo.NewStats(detectors.NewClassTable(1024, 4096)).LoadSnapshot(snap); err == nil {
		t.Errorf("a snapshot of 1024 class slots loaded into statistics of 4096")
	}
}
