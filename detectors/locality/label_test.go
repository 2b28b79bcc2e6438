package locality_test

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/detectors/locality"
)

func TestNetworkLabel(t *testing.T) {
	for _, c := range []struct{ addr, want string }{
		{"198.51.100.7", "198.51.100.0/24"},
		{"255.255.255.255", "255.255.255.0/24"},
		{"0.0.0.0", "0.0.0.0/24"},
		{"::ffff:203.0.113.9", "203.0.113.0/24"},
		{"2001:db8:1234:5678::1", "2001:db8:1234::"},
		{"ffff:ffff:ffff:ffff::", "ffff:ffff:ffff::"},
		{"::1", "0:0:0::"},
	} {
		got := locality.NetworkLabel(locality.NetworkKey(netip.MustParseAddr(c.addr))).String()
		if got != c.want {
			t.Errorf("NetworkLabel(%s) = %q; want %q", c.addr, got, c.want)
		}
	}
	// Addresses of one /24 (or /48) are one network; of two, two.
	k := locality.NetworkKey
	if k(netip.MustParseAddr("198.51.100.1")) != k(netip.MustParseAddr("198.51.100.254")) ||
		k(netip.MustParseAddr("198.51.100.1")) == k(netip.MustParseAddr("198.51.101.1")) ||
		k(netip.MustParseAddr("2001:db8:1::1")) != k(netip.MustParseAddr("2001:db8:1:ffff::1")) ||
		k(netip.MustParseAddr("2001:db8:1::1")) == k(netip.MustParseAddr("2001:db8:2::1")) {
		t.Fatal("NetworkKey does not group addresses by /24 and /48")
	}
}
