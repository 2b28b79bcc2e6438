package command

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestAdoptionsWindow: adoptions count for the window they fall in and the
// next, and are gone two windows later; a device does not count itself.
func TestAdoptionsWindow(t *testing.T) {
	a := newAdoptions(1024)
	const key = 42
	w := int64(AdoptWindow * 1e9)
	t0 := 100 * w
	for i := range 6 {
		a.learn(key, uint64(i)<<58, t0+int64(i))
	}
	cases := []struct {
		name   string
		t      int64
		device uint64
		want   float64
		approx bool
	}{
		{"same window, another device", t0 + w/2, 63 << 58, 6, true},
		{"same window, one of them", t0 + w/2, 0, 5, true},
		{"next window", t0 + w + 1, 63 << 58, 6, true},
		{"two windows later", t0 + 2*w, 63 << 58, 0, false},
		{"unknown key", t0, 63 << 58, 0, false},
	}
	for _, c := range cases {
		k := uint64(key)
		if c.name == "unknown key" {
			k = 43
		}
		got := a.devices(k, c.device, c.t)
		if c.approx && (got < c.want-0.5 || got > c.want+0.5) || !c.approx && got != c.want {
			t.Errorf("%s: %v devices, want %v", c.name, got, c.want)
		}
	}
	// A new window rotates: the old adoptions move to the previous window.
	a.learn(key, 10<<58, t0+w)
	if got := a.devices(key, 63<<58, t0+w); got < 6.5 || got > 7.5 {
		t.Errorf("after a rotation: %v devices, want 7", got)
	}
	a.learn(key, 11<<58, t0+3*w)
	if got := a.devices(key, 63<<58, t0+3*w); got < 0.5 || got > 1.5 {
		t.Errorf("after a gap of two windows: %v devices, want 1", got)
	}
}

// TestWhere: a device's home network is known once stable; another address
// of its /24, or another network on the home's ASN, is home; anything else
// is away, and a device that moves for good gets a new home.
func TestWhere(t *testing.T) {
	ev := &schemas.Event{ClientIP: netip.MustParseAddr("192.0.2.10"), ASN: 3320}
	var s state
	for range HomeNetStable - 1 {
		s.learnNet(ev)
	}
	if p := s.where(ev); p != placeUnknown {
		t.Fatalf("after %d events: place %d, want unknown", HomeNetStable-1, p)
	}
	s.learnNet(ev)
	for _, c := range []struct {
		ip   string
		asn  uint32
		want place
	}{
		{"192.0.2.10", 3320, placeHome},
		{"192.0.2.99", 0, placeHome},
		{"198.51.100.7", 3320, placeHome},
		{"198.51.100.7", 64500, placeAway},
		{"203.0.113.50", 0, placeAway},
	} {
		e := &schemas.Event{ClientIP: netip.MustParseAddr(c.ip), ASN: c.asn}
		if p := s.where(e); p != c.want {
			t.Errorf("%s on AS%d: place %d, want %d", c.ip, c.asn, p, c.want)
		}
	}
	away := &schemas.Event{ClientIP: netip.MustParseAddr("203.0.113.50"), ASN: 64500}
	for range 2 * HomeNetStable {
		s.learnNet(away)
	}
	if p := s.where(away); p != placeHome {
		t.Errorf("after moving for good: place %d, want home", p)
	}
}
