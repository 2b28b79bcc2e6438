package pipeline

import (
	"net/netip"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestDropEntities: an owner that loses partition q drops exactly entity
// partition q's records (addresses, their networks, the route and tenant
// records they made), and keeps the others'.
func TestDropEntities(t *testing.T) {
	dcfg := decide.DefaultConfig()
	eng, err := decide.NewEngine(dcfg, decide.NewLimiter(dcfg.MaxBlocksPerMinute))
	if err != nil {
		t.Fatal(err)
	}
	o, err := entity.NewOwner(entity.Config{}, 1, eng)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	for i := range 600 {
		ev := schemas.Event{ID: uint64(i + 1), Seq: uint64(i + 1), Time: t0.Add(time.Duration(i) * time.Second).UnixNano(),
			DeviceKey: uint64(i), CommandID: 7, Status: 401, Tenant: []byte("acme"),
			ClientIP: netip.AddrFrom4([4]byte{10, byte(i / 200), byte(i % 50), byte(i%7 + 1)})}
		ob, ok := entity.ObsOf(&ev)
		if !ok {
			t.Fatal("no observation")
		}
		o.Observe(&ob, func(*schemas.Alert, *schemas.Decision) {})
	}
	const parts, q = 8, 3
	count := func() (in, out int) {
		o.Table().Range(func(_, _ uint64, _ int64, rec []byte) bool {
			if entity.PartitionOf(rec, parts) == q {
				in++
			} else {
				out++
			}
			return true
		})
		return in, out
	}
	in, out := count()
	if in == 0 || out == 0 {
		t.Fatalf("records: %d of partition %d, %d of others; want both", in, q, out)
	}
	if n := dropEntities(o.Table(), q, parts); n != in {
		t.Errorf("dropped %d records, partition %d had %d", n, q, in)
	}
	if in2, out2 := count(); in2 != 0 || out2 != out {
		t.Errorf("after the drop: %d of partition %d (want 0), %d of others (want %d)", in2, q, out2, out)
	}
}
