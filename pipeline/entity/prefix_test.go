package entity

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestPrefixKeysFromWords: the prefix keys computed from the address's
// masked halves (prefixHalf, prefixKey: what Shard, ObsPartition and an
// address's owner route use) are those of the masked address's copy
// (keyOf of prefixAddr), for IPv4 (/24) and IPv6 (/48) addresses, so
// that owners, partitions and checkpointed routes do not move.
func TestPrefixKeysFromWords(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 14))
	for i := range 2000 {
		var a [16]byte
		for j := range a {
			a[j] = byte(r.Uint32())
		}
		addr := netip.AddrFrom16(a)
		if i%2 == 0 {
			addr = netip.AddrFrom4([4]byte{a[0], a[1], a[2], a[3]})
		}
		var ev schemas.Event
		ev.ClientIP = addr
		ob, ok := ObsOf(&ev)
		if !ok {
			t.Fatalf("%v: no observation", addr)
		}
		key, alt := keyOf(kindPrefix, ob.prefixAddr())
		if k, al := ob.prefixKey(); k != key || al != alt {
			t.Fatalf("%v: prefixKey %x %x, keyOf of the prefix %x %x", addr, k, al, key, alt)
		}
		if h := ob.prefixHalf(); h != key {
			t.Fatalf("%v: prefixHalf %x, keyHalf of the prefix %x", addr, h, key)
		}
		if got, want := Shard(&ob, 7), shard.Of(key, 7); got != want {
			t.Fatalf("%v: Shard %d, of the prefix's key %d", addr, got, want)
		}
		if got, want := ObsPartition(&ob, 5), routePartition(key, 5); got != want {
			t.Fatalf("%v: ObsPartition %d, of the prefix's key %d", addr, got, want)
		}
	}
}
