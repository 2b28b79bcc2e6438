package locality

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// benchObserve warms a device up for a day on one network (a request a
// minute), then scores one event a second from the addresses given in turn.
func benchObserve(b *testing.B, addrs ...netip.Addr) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.ASN = 3320
	ev.ClientIP = netip.MustParseAddr("198.51.100.7")
	state := make([]byte, StateSize)
	var d Detector
	t := int64(1736121600e9)
	for range 1440 {
		t += 60e9
		ev.Time = t
		d.Observe(&ev, state, nil)
	}
	b.ReportAllocs()
	i := 0
	cpu := threadcpu.Start()
	for b.Loop() {
		t += 1e9
		ev.Time = t
		ev.ClientIP = addrs[i%len(addrs)]
		i++
		d.Observe(&ev, state, nil)
	}
	cpu.Report(b)
}

func BenchmarkObserve(b *testing.B) {
	home := netip.MustParseAddr("198.51.100.7")
	b.Run("steady", func(b *testing.B) { benchObserve(b, home) })
	// A new network every event: insertion, eviction, a new_network finding.
	b.Run("new_network", func(b *testing.B) {
		benchObserve(b, netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("192.0.2.1"),
			netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.19.0.1"), netip.MustParseAddr("100.64.0.1"))
	})
	// A clone: two networks in turn, a concurrent_networks finding per event.
	b.Run("concurrent", func(b *testing.B) { benchObserve(b, home, netip.MustParseAddr("203.0.113.9")) })
	b.Run("ipv6", func(b *testing.B) {
		benchObserve(b, netip.MustParseAddr("2001:db8:1234::1"), netip.MustParseAddr("2001:db8:5678::1"))
	})
}

// TestObserveAllocs checks the attack paths do not allocate (the label
// formatting included).
func TestObserveAllocs(t *testing.T) {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	state := make([]byte, StateSize)
	var d Detector
	tm := int64(1736121600e9)
	a, b6 := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8:1234::1")
	c := netip.MustParseAddr("203.0.113.9")
	found := map[string]bool{}
	for i := range 3000 {
		tm += 60e9
		ev.Time = tm
		ev.ClientIP = a
		if i >= 2900 && i%2 == 0 {
			ev.ClientIP = c
		}
		found[d.Observe(&ev, state, nil).Reason] = true
	}
	if !found[ReasonNewNetwork] || !found[ReasonConcurrentNetworks] {
		t.Fatalf("reasons found: %v; want both", found)
	}
	n := testing.AllocsPerRun(1000, func() {
		tm += 30e9
		ev.Time = tm
		if ev.ClientIP == a {
			ev.ClientIP = c
		} else {
			ev.ClientIP = a
		}
		_ = d.Observe(&ev, state, nil)
		ev.ClientIP = b6
		_ = d.Observe(&ev, state, nil)
		_ = NetworkLabel(NetworkKey(b6))
	})
	if n != 0 {
		t.Fatalf("Observe allocates %v times per run", n)
	}
}
