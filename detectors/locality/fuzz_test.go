package locality

import (
	"math"
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// FuzzObserveLocality drives client addresses and ASNs through any state
// record: no panic, no write past the state, finite values, a declared
// reason with a score in (0,1].
func FuzzObserveLocality(f *testing.F) {
	f.Add(int64(1736121600e9), make([]byte, StateSize), []byte{198, 51, 100, 7}, []byte{203, 0, 113, 9}, uint32(3320), int64(60e9))
	f.Add(int64(-1), []byte{0xff, 0xff, 0xff, 0xff}, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{1, 2, 3, 4}, uint32(0), int64(-1))
	f.Add(int64(math.MaxInt64), make([]byte, 96), []byte{}, []byte{10, 0, 0, 1}, ^uint32(0), int64(1))
	f.Fuzz(func(t *testing.T, tm int64, state []byte, ipA, ipB []byte, asn uint32, step int64) {
		buf := make([]byte, StateSize+8)
		copy(buf[:StateSize], state)
		st := buf[:StateSize]
		a, _ := netip.AddrFromSlice(ipA)
		b, _ := netip.AddrFromSlice(ipB)
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte("d-1"))
		ev.ASN, ev.Time = asn, tm
		var d Detector
		for i := range 12 {
			ev.ClientIP = a
			if i%2 == 1 {
				ev.ClientIP = b
			}
			fd := d.Observe(&ev, st, nil)
			if math.IsNaN(fd.Observed) || math.IsInf(fd.Observed, 0) || math.IsNaN(fd.Expected) || math.IsInf(fd.Expected, 0) {
				t.Fatalf("call %d: not finite: %+v", i, fd)
			}
			switch fd.Reason {
			case schemas.ReasonNone:
			case ReasonNewNetwork, ReasonConcurrentNetworks:
				if !(fd.Score > 0 && fd.Score <= 1) {
					t.Fatalf("call %d: score %v", i, fd.Score)
				}
			default:
				t.Fatalf("call %d: undeclared reason %q", i, fd.Reason)
			}
			for _, c := range buf[StateSize:] {
				if c != 0 {
					t.Fatalf("call %d: wrote past the state", i)
				}
			}
			ev.Time += step
		}
	})
}
