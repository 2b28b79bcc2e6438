package entity

import (
	"net/netip"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkObserve is the entity stage's cost per event: the observation
// (ObsOf), its owner (Shard) and the owner judging the address and its
// prefix. steady: 20,000 devices, each from its own address, cycling;
// stuffing: one address failing auth as a new device each event (alerted,
// then blocked, then in its cool-down); flood: a new address each event, at
// the cap (1M entities in one owner: every event inserts two records and
// evicts).
var benchTenant = []byte("acme")

func BenchmarkObserve(b *testing.B) {
	emit := func(*schemas.Alert, *schemas.Decision) {}
	event := func(ip netip.Addr, dev uint64, failed bool, at int64, seq uint64) *schemas.Event {
		var ev schemas.Event
		ev.ClientIP, ev.DeviceKey, ev.Time, ev.Seq, ev.ID = ip, dev, at, seq, seq
		ev.Protocol, ev.Status, ev.Auth = schemas.ProtoHTTP, 200, schemas.AuthOK
		ev.Tenant = benchTenant // every event has its tenant (the tenant entity)
		if failed {
			ev.Status, ev.Auth = 401, schemas.AuthFailed
		}
		return &ev
	}
	run := func(b *testing.B, o *Owner, next func(i int) *schemas.Event) {
		b.ReportAllocs()
		i := 0
		cpu := threadcpu.Start()
		for b.Loop() {
			ev := next(i)
			if ob, ok := ObsOf(ev); ok {
				_ = Shard(&ob, 2)
				o.Observe(&ob, emit)
			}
			i++
		}
		cpu.Report(b)
	}
	b.Run("steady", func(b *testing.B) {
		o := newOwner(b, Config{}, decide.Config{})
		const devices = 20000
		evs := make([]*schemas.Event, devices)
		for d := range devices {
			evs[d] = event(netip.AddrFrom4([4]byte{10, byte(d >> 16), byte(d >> 8), byte(d)}), mix(uint64(d)+1), false, 0, 0)
		}
		for d, ev := range evs { // every address has its record: no growth in the loop
			ob, _ := ObsOf(ev)
			ob.Time = t0 - int64(time.Hour) + int64(d)
			o.Observe(&ob, emit)
		}
		run(b, o, func(i int) *schemas.Event {
			ev := evs[i%devices]
			ev.Time = t0 + int64(i)*int64(10*time.Millisecond)
			ev.Seq = uint64(i + 1)
			return ev
		})
	})
	// steady/addresses=1M: a million known addresses, each sending a
	// successful request in turn, so that every event's address record is
	// a cache miss (the table is ~200 MB): what the record layout and the
	// slot alignment decide is how many lines that miss brings in.
	b.Run("steady/addresses=1M", func(b *testing.B) {
		const addresses = 1_000_000
		o := newOwner(b, Config{MaxEntities: 2 * addresses}, decide.Config{})
		ev := event(netip.IPv4Unspecified(), 0, false, 0, 0)
		next := func(i int) *schemas.Event {
			d := i % addresses
			ev.ClientIP = netip.AddrFrom4([4]byte{10, byte(d >> 16), byte(d >> 8), byte(d)})
			ev.DeviceKey = mix(uint64(d) + 1)
			ev.Time = t0 + int64(i)*int64(100*time.Microsecond) // 100 s a round: 3 a window
			ev.Seq = uint64(i + 1)
			return ev
		}
		for d := range addresses { // every address has its record: no growth in the loop
			ob, _ := ObsOf(next(d))
			o.Observe(&ob, emit)
		}
		run(b, o, func(i int) *schemas.Event { return next(addresses + i) })
	})
	// steady/addresses=1M/batch=16: the same, judged as the pipeline's owner
	// judges what its input holds (ObserveBatch, MaxPrefetchBatch at a time):
	// the batch's misses overlap.
	b.Run("steady/addresses=1M/batch="+strconv.Itoa(MaxPrefetchBatch), func(b *testing.B) {
		const addresses = 1_000_000
		o := newOwner(b, Config{MaxEntities: 2 * addresses}, decide.Config{})
		ev := event(netip.IPv4Unspecified(), 0, false, 0, 0)
		next := func(i int) *schemas.Event {
			d := i % addresses
			ev.ClientIP = netip.AddrFrom4([4]byte{10, byte(d >> 16), byte(d >> 8), byte(d)})
			ev.DeviceKey = mix(uint64(d) + 1)
			ev.Time = t0 + int64(i)*int64(100*time.Microsecond)
			ev.Seq = uint64(i + 1)
			return ev
		}
		for d := range addresses {
			ob, _ := ObsOf(next(d))
			o.Observe(&ob, emit)
		}
		batch := make([]Obs, 0, MaxPrefetchBatch)
		b.ReportAllocs()
		i := 0
		cpu := threadcpu.Start()
		for b.Loop() {
			if ob, ok := ObsOf(next(addresses + i)); ok {
				_ = Shard(&ob, 2)
				if batch = append(batch, ob); len(batch) == cap(batch) {
					o.ObserveBatch(batch, emit)
					batch = batch[:0]
				}
			}
			i++
		}
		cpu.Report(b)
	})
	b.Run("stuffing", func(b *testing.B) {
		o := newOwner(b, Config{}, decide.Config{})
		ev := event(netip.MustParseAddr("198.51.100.7"), 0, true, 0, 0)
		run(b, o, func(i int) *schemas.Event {
			ev.DeviceKey = mix(uint64(i) + 1)
			ev.Time = t0 + int64(i)*int64(10*time.Millisecond)
			ev.Seq = uint64(i + 1)
			return ev
		})
	})
	for _, limit := range []int{100_000, 1 << 20} {
		b.Run("flood/cap="+strconv.Itoa(limit), func(b *testing.B) {
			o := newOwner(b, Config{MaxEntities: limit}, decide.Config{})
			ev := event(netip.IPv4Unspecified(), 1, false, 0, 0)
			next := func(i int) *schemas.Event {
				ev.ClientIP = netip.AddrFrom4([4]byte{byte(11 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
				ev.DeviceKey = uint64(i)
				ev.Time = t0 + int64(i)*int64(time.Microsecond)
				ev.Seq = uint64(i + 1)
				return ev
			}
			for i := range 2 * limit { // fill to the cap
				ob, _ := ObsOf(next(i))
				o.Observe(&ob, emit)
			}
			base := 2 * limit
			run(b, o, func(i int) *schemas.Event { return next(base + i) })
			st := o.Stats()
			b.ReportMetric(float64(st.Bytes)/float64(st.Devices), "slab-bytes/entity")
		})
	}
}

// BenchmarkFloodMemory feeds 5 million distinct addresses (one request
// each, 20,000 /24s) to two owners with the default cap
// (DefaultMaxEntities shared): run with -benchtime 1x. It reports the
// entities held, the live evictions, the slab bytes and the Go heap in use
// after the flood (the slabs are the heap: records hold no pointers).
func BenchmarkFloodMemory(b *testing.B) {
	emit := func(*schemas.Alert, *schemas.Decision) {}
	const n = 5_000_000
	for b.Loop() {
		var owners []*Owner
		for range 2 {
			eng, err := decide.NewEngine(decide.DefaultConfig(), nil)
			if err != nil {
				b.Fatal(err)
			}
			o, err := NewOwner(Config{}, 2, eng)
			if err != nil {
				b.Fatal(err)
			}
			owners = append(owners, o)
		}
		var ev schemas.Event
		ev.Protocol, ev.Status, ev.Auth = schemas.ProtoHTTP, 200, schemas.AuthOK
		for i := range n {
			ev.ClientIP = netip.AddrFrom4([4]byte{byte(11 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
			ev.DeviceKey, ev.Time, ev.Seq = uint64(i), t0+int64(i)*int64(time.Microsecond), uint64(i+1)
			ob, _ := ObsOf(&ev)
			owners[Shard(&ob, 2)].Observe(&ob, emit)
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var entities, evictions, bytes float64
		for _, o := range owners {
			st := o.Stats()
			entities += float64(st.Devices)
			evictions += float64(st.LiveEvictions)
			bytes += float64(st.Bytes)
		}
		b.ReportMetric(entities, "entities")
		b.ReportMetric(evictions, "evictions")
		b.ReportMetric(bytes/(1<<20), "slab-MiB")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/address")
		runtime.KeepAlive(owners)
	}
}
