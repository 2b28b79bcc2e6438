package state

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// base is a realistic event time: 2025-01-01T00:00:00Z.
var base = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

func at(sec int64) int64 { return base + sec*int64(time.Second) }

func mustTable(t testing.TB, cfg Config) *Table {
	t.Helper()
	tb, err := NewTable(cfg)
	if err != nil {
		t.Fatalf("cannot create table: %s", err)
	}
	return tb
}

type devKey struct{ key, alt uint64 }

// TestTableModel runs random operation sequences against a Go map and checks
// that presence and content always agree, through grows and deletions.
func TestTableModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		recSize := []int{1, 13, 128, 300}[seed%4]
		tb := mustTable(t, Config{RecordSize: recSize, InitialDevices: 4})
		model := map[devKey][]byte{}
		// A small key space with shared halves, so that (key, alt) pairs that
		// differ in one half only, and (0, 0), are exercised.
		keyOf := func() devKey {
			return devKey{rng.Uint64N(300), rng.Uint64N(4)}
		}
		check := func(k devKey) {
			t.Helper()
			rec, ok := tb.Lookup(k.key, k.alt)
			want, wantOK := model[k]
			if ok != wantOK {
				t.Fatalf("seed %d: Lookup(%v) ok = %v, model says %v", seed, k, ok, wantOK)
			}
			if ok && !bytes.Equal(rec, want) {
				t.Fatalf("seed %d: Lookup(%v) = %x, want %x", seed, k, rec, want)
			}
		}
		for op := 0; op < 30000; op++ {
			k := keyOf()
			switch r := rng.IntN(10); {
			case r < 6:
				rec, existed := tb.Record(k.key, k.alt, at(int64(op)))
				want, wantOK := model[k]
				if existed != wantOK {
					t.Fatalf("seed %d op %d: Record(%v) existed = %v, model says %v", seed, op, k, existed, wantOK)
				}
				if len(rec) != recSize {
					t.Fatalf("seed %d: len(rec) = %d, want %d", seed, len(rec), recSize)
				}
				if !wantOK {
					want = make([]byte, recSize)
				}
				if !bytes.Equal(rec, want) {
					t.Fatalf("seed %d op %d: Record(%v) = %x, want %x", seed, op, k, rec, want)
				}
				for i := range rec {
					rec[i] = byte(rng.Uint32())
				}
				model[k] = bytes.Clone(rec)
			case r < 8:
				_, wantOK := model[k]
				if got := tb.Delete(k.key, k.alt); got != wantOK {
					t.Fatalf("seed %d op %d: Delete(%v) = %v, want %v", seed, op, k, got, wantOK)
				}
				delete(model, k)
			default:
				check(k)
			}
			if tb.Len() != len(model) {
				t.Fatalf("seed %d op %d: Len() = %d, model has %d", seed, op, tb.Len(), len(model))
			}
		}
		for k := 0; k < 300; k++ {
			for a := 0; a < 4; a++ {
				check(devKey{uint64(k), uint64(a)})
			}
		}
		seen := 0
		tb.Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
			seen++
			if want, ok := model[devKey{key, alt}]; !ok || !bytes.Equal(rec, want) {
				t.Fatalf("seed %d: Range yielded (%d, %d) = %x, model has %x (%v)", seed, key, alt, rec, want, ok)
			}
			if lastSeen < base || lastSeen > at(30000) || lastSeen%int64(time.Second) != 0 {
				t.Fatalf("seed %d: Range lastSeen %d outside the event times used", seed, lastSeen)
			}
			return true
		})
		if seen != len(model) {
			t.Fatalf("seed %d: Range yielded %d records, model has %d", seed, seen, len(model))
		}
		if st := tb.Stats(); st.Grows == 0 || st.Devices != len(model) || st.Bytes != st.Capacity*tb.slotSize {
			t.Fatalf("seed %d: unexpected stats %+v", seed, st)
		}
	}
}

// TestTableQuietSurvivesChurn checks the requirement fastcache misses: a
// record idle for less than its TTL survives whatever other devices do, here
// 200k devices updated again and again plus a stream of new devices that go
// idle and expire.
func TestTableQuietSurvivesChurn(t *testing.T) {
	const (
		ttl      = time.Hour
		churners = 200_000
		quiet    = 200
		seconds  = 5 * 3600
	)
	tb := mustTable(t, Config{RecordSize: 64, IdleTTL: ttl})
	rng := rand.New(rand.NewPCG(1, 2))
	quietCount := make([]uint32, quiet)
	quietKey := func(i int) (uint64, uint64) { return 1<<62 | uint64(i), 99 }
	oneShot := uint64(1 << 61)
	maxLen := 0
	for sec := int64(0); sec < seconds; sec++ {
		now := at(sec)
		// 40 updates of random churning devices per second.
		for range 40 {
			c := rng.Uint64N(churners)
			rec, _ := tb.Record(c, c*3, now)
			binary.LittleEndian.PutUint64(rec, binary.LittleEndian.Uint64(rec)+1)
		}
		// 10 devices seen once, which expire an hour later.
		for range 10 {
			oneShot++
			rec, existed := tb.Record(oneShot, 0, now)
			if existed {
				t.Fatalf("new device %d already existed", oneShot)
			}
			rec[0] = 1
		}
		// Quiet device i reports every 50-59 minutes, phase-shifted.
		for i := range quiet {
			period := int64(3000 + 3*i) // < ttl
			if sec%period != int64(i)%period {
				continue
			}
			k, a := quietKey(i)
			rec, existed := tb.Record(k, a, now)
			if quietCount[i] > 0 {
				if !existed {
					t.Fatalf("second %d: quiet device %d (idle < TTL) was lost", sec, i)
				}
				if got := binary.LittleEndian.Uint32(rec); got != quietCount[i] {
					t.Fatalf("second %d: quiet device %d holds %d, want %d", sec, i, got, quietCount[i])
				}
			}
			quietCount[i]++
			binary.LittleEndian.PutUint32(rec, quietCount[i])
		}
		maxLen = max(maxLen, tb.Len())
	}
	st := tb.Stats()
	if st.LiveEvictions != 0 {
		t.Fatalf("LiveEvictions = %d, want 0 without MaxDevices", st.LiveEvictions)
	}
	// One-shot devices beyond their TTL must be reclaimed: at most an hour of
	// them (36k) plus the sweep's slack may be held, not all 180k.
	if st.Expired < 100_000 {
		t.Fatalf("Expired = %d, want most of the %d one-shot devices reclaimed", st.Expired, oneShot-1<<61)
	}
	if maxLen > churners+quiet+60_000 {
		t.Fatalf("table held up to %d records: expired ones pile up", maxLen)
	}
	for i := range quiet {
		if quietCount[i] < 5 {
			t.Fatalf("quiet device %d reported only %d times: the test does not exercise it", i, quietCount[i])
		}
	}
}

// TestTableExpiry checks the TTL boundary, that expired records read as
// absent and are reclaimed, and that out-of-order events never shorten a
// record's life.
func TestTableExpiry(t *testing.T) {
	const ttl = 100 * time.Second
	tb := mustTable(t, Config{RecordSize: 8, IdleTTL: ttl})

	rec, _ := tb.Record(1, 1, at(0))
	rec[0] = 11
	rec, _ = tb.Record(2, 2, at(0))
	rec[0] = 22
	// An event of device 3 from the past does not move its lastSeen backwards.
	tb.Record(3, 3, at(50))
	tb.Record(3, 3, at(10))

	// Exactly TTL idle: still live.
	tb.Record(9, 9, at(100))
	if rec, ok := tb.Lookup(1, 1); !ok || rec[0] != 11 {
		t.Fatalf("record idle exactly TTL: Lookup = %v %v, want live", rec, ok)
	}
	if rec, existed := tb.Record(1, 1, at(100)); !existed || rec[0] != 11 {
		t.Fatalf("record idle exactly TTL: Record = %v %v, want live", rec, existed)
	}
	// Idle TTL + 1 s: expired for every read.
	tb.Record(9, 9, at(101))
	if _, ok := tb.Lookup(2, 2); ok {
		t.Fatalf("record idle TTL+1s is still visible to Lookup")
	}
	tb.Range(func(key, alt uint64, _ int64, _ []byte) bool {
		if key == 2 {
			t.Fatalf("Range yielded an expired record")
		}
		return true
	})
	if rec, existed := tb.Record(2, 2, at(101)); existed || rec[0] != 0 {
		t.Fatalf("expired record: Record = %v existed %v, want a zeroed fresh record", rec, existed)
	}
	if st := tb.Stats(); st.Expired != 1 {
		t.Fatalf("Expired = %d, want 1", st.Expired)
	}
	tb.Record(9, 9, at(140))
	if _, ok := tb.Lookup(3, 3); !ok {
		t.Fatalf("device 3 (last seen at 50, then an older event at 10) expired at 140")
	}

	// A thousand devices go idle; later insertions sweep them away.
	for i := range 1000 {
		tb.Record(uint64(1000+i), 0, at(200))
	}
	n := tb.Len()
	for i := range 1000 {
		tb.Record(uint64(5000+i), 0, at(400+int64(i)))
	}
	st := tb.Stats()
	if st.Expired < 1000 {
		t.Fatalf("Expired = %d after 1000 idle devices passed their TTL, want >= 1000", st.Expired)
	}
	if tb.Len() > n {
		t.Fatalf("Len grew from %d to %d: expired records were not reclaimed", n, tb.Len())
	}
	for i := range 1000 {
		if _, ok := tb.Lookup(uint64(1000+i), 0); ok {
			t.Fatalf("expired device %d still visible", 1000+i)
		}
	}
	if st.LiveEvictions != 0 {
		t.Fatalf("LiveEvictions = %d, want 0", st.LiveEvictions)
	}
}

func TestTableGrowPreservesContent(t *testing.T) {
	const n = 100_000
	tb := mustTable(t, Config{RecordSize: 20, InitialDevices: 1})
	for i := range n {
		rec, existed := tb.Record(uint64(i)*0x100000001, ^uint64(i), at(int64(i%1000)))
		if existed {
			t.Fatalf("device %d existed before insertion", i)
		}
		binary.LittleEndian.PutUint64(rec, uint64(i))
		binary.LittleEndian.PutUint64(rec[12:], uint64(i)*7)
	}
	st := tb.Stats()
	if st.Grows < 10 || st.Devices != n || st.Devices*4 > st.Capacity*3 {
		t.Fatalf("unexpected stats after %d insertions: %+v", n, st)
	}
	for i := range n {
		rec, ok := tb.Lookup(uint64(i)*0x100000001, ^uint64(i))
		if !ok || binary.LittleEndian.Uint64(rec) != uint64(i) || binary.LittleEndian.Uint64(rec[12:]) != uint64(i)*7 {
			t.Fatalf("device %d lost or corrupted by grows: %x %v", i, rec, ok)
		}
	}
}

func TestTablePresized(t *testing.T) {
	tb := mustTable(t, Config{RecordSize: 128, InitialDevices: 3000})
	for i := range 3000 {
		tb.Record(uint64(i), 0, at(0))
	}
	st := tb.Stats()
	if st.Grows != 0 || st.Capacity != 4000 || st.Bytes != 4000*152 {
		t.Fatalf("presized table for 3000 devices: %+v, want capacity 4000 slots of 152 bytes and no grow", st)
	}
}

func TestTableMaxDevices(t *testing.T) {
	const maxDev = 1000
	tb := mustTable(t, Config{RecordSize: 8, MaxDevices: maxDev, IdleTTL: time.Hour})
	for i := range maxDev {
		tb.Record(uint64(i), 1, at(0))
	}
	capacity := tb.Stats().Capacity
	for i := range maxDev {
		rec, _ := tb.Record(uint64(i), 2, at(int64(10+i)))
		rec[0] = 1
	}
	st := tb.Stats()
	if st.Devices != maxDev || st.LiveEvictions != maxDev || st.Expired != 0 || st.Capacity != capacity || st.Capacity*3 < maxDev*4 {
		t.Fatalf("after %d insertions beyond MaxDevices: %+v", maxDev, st)
	}
	// Eviction picks approximately the least recently seen: the old batch goes first.
	newer := 0
	for i := range maxDev {
		if _, ok := tb.Lookup(uint64(i), 2); ok {
			newer++
		}
	}
	if newer < maxDev*9/10 {
		t.Fatalf("only %d of the %d most recent devices survived eviction", newer, maxDev)
	}

	// Expired records are reclaimed before live ones and are not live evictions.
	for i := range maxDev {
		tb.Record(uint64(i), 3, at(10_000+int64(i)))
	}
	st2 := tb.Stats()
	if st2.LiveEvictions != st.LiveEvictions || st2.Expired < maxDev || st2.Devices != maxDev {
		t.Fatalf("after the table expired: %+v, want expired records reclaimed, no live evictions", st2)
	}
}

func TestNewTableErrors(t *testing.T) {
	f := func(cfg Config, want string) {
		t.Helper()
		_, err := NewTable(cfg)
		if err == nil {
			t.Fatalf("NewTable(%+v) succeeded, want error %q", cfg, want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("NewTable(%+v) error %q, want it to contain %q", cfg, err, want)
		}
	}
	f(Config{}, "cannot create state table: RecordSize 0 must be in [1,4096]")
	f(Config{RecordSize: 4097}, "RecordSize 4097 must be in [1,4096]")
	f(Config{RecordSize: 8, InitialDevices: -1}, "InitialDevices -1 must be >= 0")
	f(Config{RecordSize: 8, MaxDevices: -5}, "MaxDevices -5 must be >= 0")
	f(Config{RecordSize: 8, IdleTTL: -time.Second}, `IdleTTL "-1s" must be >= 0`)
	f(Config{RecordSize: 4096, InitialDevices: 1 << 40}, "InitialDevices 1099511627776 needs more than")
	f(Config{RecordSize: 4096, MaxDevices: 1 << 40}, "MaxDevices 1099511627776 needs more than")

	tb := mustTable(t, Config{RecordSize: 1})
	if st := tb.Stats(); st.Capacity != capacityFor(defaultInitialDevices) || tb.ttl != int64(defaultIdleTTL/time.Second) {
		t.Fatalf("defaults not applied: %+v ttl %ds", st, tb.ttl)
	}
}

// TestTableDeleteCluster builds one cluster that wraps around the end of the
// slab and deletes from it: backward shift must keep every other key
// reachable.
func TestTableDeleteCluster(t *testing.T) {
	tb := mustTable(t, Config{RecordSize: 8, InitialDevices: 60}) // 80 slots, no grow below 60
	capacity := tb.Stats().Capacity
	// Pick keys whose home slots are capacity-3 .. capacity-1 and 0, several per home.
	var keys []devKey
	perHome := map[int]int{}
	for k := uint64(0); len(keys) < 16; k++ {
		h := tb.home(k, 5)
		if (h >= capacity-3 || h == 0) && perHome[h] < 4 {
			perHome[h]++
			keys = append(keys, devKey{k, 5})
		}
	}
	for i, k := range keys {
		rec, _ := tb.Record(k.key, k.alt, at(0))
		rec[0] = byte(i + 1)
	}
	// The cluster must wrap: some key sits at a slot before its home.
	wrapped := false
	for _, k := range keys {
		if i, _ := tb.find(k.key, k.alt); i < tb.home(k.key, k.alt) {
			wrapped = true
		}
	}
	if !wrapped {
		t.Fatalf("test setup: the cluster does not wrap around the slab end")
	}
	order := rand.New(rand.NewPCG(3, 4)).Perm(len(keys))
	deleted := map[int]bool{}
	for _, d := range order {
		if !tb.Delete(keys[d].key, keys[d].alt) {
			t.Fatalf("Delete(%v) = false for a present key", keys[d])
		}
		deleted[d] = true
		if tb.Delete(keys[d].key, keys[d].alt) {
			t.Fatalf("second Delete(%v) = true", keys[d])
		}
		for i, k := range keys {
			rec, ok := tb.Lookup(k.key, k.alt)
			if ok == deleted[i] {
				t.Fatalf("after deleting %d keys: Lookup(%v) ok = %v, deleted = %v", len(deleted), k, ok, deleted[i])
			}
			if ok && rec[0] != byte(i+1) {
				t.Fatalf("key %v holds %d, want %d", k, rec[0], i+1)
			}
		}
	}
	if tb.Len() != 0 {
		t.Fatalf("Len = %d after deleting everything", tb.Len())
	}
	for off := 0; off < len(tb.slab); off += tb.slotSize {
		if binary.LittleEndian.Uint64(tb.slab[off+offMeta:])&flagUsed != 0 {
			t.Fatalf("slot %d still used after deleting everything", off/tb.slotSize)
		}
	}
}

func TestTableZeroKey(t *testing.T) {
	tb := mustTable(t, Config{RecordSize: 4})
	if _, ok := tb.Lookup(0, 0); ok {
		t.Fatalf("key (0, 0) found in an empty table")
	}
	rec, existed := tb.Record(0, 0, at(0))
	if existed {
		t.Fatalf("key (0, 0) existed in an empty table")
	}
	rec[3] = 42
	if rec, existed := tb.Record(0, 0, at(1)); !existed || rec[3] != 42 {
		t.Fatalf("key (0, 0): Record = %v existed %v", rec, existed)
	}
	if _, ok := tb.Lookup(0, 1); ok {
		t.Fatalf("key (0, 1) found: halves must both match")
	}
	if !tb.Delete(0, 0) || tb.Len() != 0 {
		t.Fatalf("cannot delete key (0, 0)")
	}
}

func TestTableRecordAllocs(t *testing.T) {
	tb := mustTable(t, Config{RecordSize: 128, InitialDevices: 10_000})
	for i := range 10_000 {
		tb.Record(uint64(i), uint64(i), at(0))
	}
	i := uint64(0)
	allocs := testing.AllocsPerRun(10_000, func() {
		i = (i + 7919) % 10_000
		rec, existed := tb.Record(i, i, at(int64(i)))
		if !existed {
			t.Fatalf("device %d missing", i)
		}
		rec[0]++
	})
	if allocs != 0 {
		t.Fatalf("Record allocates %.1f times per call, want 0", allocs)
	}
	// Insertions without a grow do not allocate either.
	tb2 := mustTable(t, Config{RecordSize: 128, InitialDevices: 20_000})
	j := uint64(0)
	allocs = testing.AllocsPerRun(10_000, func() {
		j++
		tb2.Record(j, 0, at(0))
	})
	if allocs != 0 {
		t.Fatalf("Record of a new device allocates %.1f times per call, want 0", allocs)
	}
}

// TestKeepIsEvictedLast checks Config.Keep: at the cap, a flood of new
// records evicts the unkept ones, however recently seen, before a kept one.
func TestKeepIsEvictedLast(t *testing.T) {
	tab, err := NewTable(Config{RecordSize: 8, MaxDevices: 1000, InitialDevices: 1000,
		Keep: func(rec []byte) bool { return rec[0] == 1 }})
	if err != nil {
		t.Fatal(err)
	}
	const base = int64(1_800_000_000) * int64(time.Second)
	for k := range uint64(10) {
		rec, _ := tab.Record(k, 0, base)
		rec[0] = 1 // kept, and the least recently seen
	}
	for k := uint64(100); k < 100_000; k++ {
		tab.Record(k, 0, base+int64(k)*int64(time.Millisecond)) // within the TTL
	}
	for k := range uint64(10) {
		if _, ok := tab.Lookup(k, 0); !ok {
			t.Errorf("kept record %d was evicted", k)
		}
	}
	if st := tab.Stats(); st.Devices != 1000 || st.LiveEvictions == 0 {
		t.Errorf("stats %+v: want 1000 devices and evictions", st)
	}
}

// TestPrefetchChangesNothing: Prefetch, PrefetchRecord and PrefetchKeys, of present and
// absent keys, of every slot of tables of small and large records (the last
// slot's reach included), leave the table's records, clock and statistics
// as they were.
func TestPrefetchChangesNothing(t *testing.T) {
	for _, size := range []int{1, 40, 128, 300, 4096} {
		tb := mustTable(t, Config{RecordSize: size, InitialDevices: 64, IdleTTL: time.Hour})
		for k := range uint64(200) {
			rec, _ := tb.Record(k, ^k, at(int64(k)))
			rec[0], rec[len(rec)-1] = byte(k), byte(k)
		}
		before, stats := slices.Clone(tb.slab), tb.Stats()
		r := rand.New(rand.NewPCG(1, uint64(size)))
		var keys [][2]uint64
		for k := range uint64(200) {
			tb.Prefetch(k, ^k)
			tb.Prefetch(r.Uint64(), r.Uint64())
			tb.PrefetchRecord(k, ^k)
			tb.PrefetchRecord(r.Uint64(), r.Uint64())
			keys = append(keys, [2]uint64{k, ^k}, [2]uint64{r.Uint64(), r.Uint64()})
		}
		for n := range 70 { // batches of 0 to 69 keys: under, at and over prefetchKeysAtOnce
			tb.PrefetchKeys(keys[:n])
		}
		tb.PrefetchKeys(keys)
		if !bytes.Equal(tb.slab, before) || tb.Stats() != stats {
			t.Errorf("record size %d: Prefetch changed the table", size)
		}
		for k := range uint64(200) {
			if rec, ok := tb.Lookup(k, ^k); !ok || rec[0] != byte(k) || rec[len(rec)-1] != byte(k) {
				t.Fatalf("record size %d: record %d lost or changed", size, k)
			}
		}
	}
}

// TestHugePagesChangeNothing: a table with Config.HugePages keeps, finds,
// evicts and expires exactly as one without, over growth (from a slab
// under 2 MiB to several MiB) and eviction at MaxDevices; its slabs of
// 2 MiB or more start on a 2 MiB boundary, and Stats.Bytes counts their
// alignment slack.
func TestHugePagesChangeNothing(t *testing.T) {
	cfg := Config{RecordSize: 128, InitialDevices: 1024, MaxDevices: 40000, IdleTTL: time.Hour}
	plain := mustTable(t, cfg)
	cfg.HugePages = true
	huge := mustTable(t, cfg)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range 120000 {
		k := r.Uint64N(60000) // more keys than MaxDevices: evictions, and expiries
		now := at(int64(i / 20))
		for _, tb := range []*Table{plain, huge} {
			rec, existed := tb.Record(k, ^k, now)
			if existed != (binary.LittleEndian.Uint64(rec) == k+1) {
				t.Fatalf("event %d, key %d: existed %v, record of %d", i, k, existed, binary.LittleEndian.Uint64(rec)-1)
			}
			binary.LittleEndian.PutUint64(rec, k+1)
			rec[127]++
		}
	}
	ps, hs := plain.Stats(), huge.Stats()
	if ps.Bytes < hugePage {
		t.Fatalf("slab of %d bytes: the test wants one of 2 MiB or more", ps.Bytes)
	}
	if hs.Bytes != ps.Bytes+hugePage {
		t.Errorf("Bytes %d with huge pages, %d without: want the 2 MiB slack counted", hs.Bytes, ps.Bytes)
	}
	hs.Bytes = ps.Bytes
	if hs != ps {
		t.Errorf("stats with huge pages %+v, without %+v", hs, ps)
	}
	if !bytes.Equal(huge.slab, plain.slab) {
		t.Error("slabs differ")
	}
	if p := uintptr(unsafe.Pointer(unsafe.SliceData(huge.slab))); p%hugePage != 0 {
		t.Errorf("slab at %#x: not 2 MiB-aligned", p)
	}
}
