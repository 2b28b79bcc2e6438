// Package state keeps one fixed-size state record per device where the
// garbage collector never scans it.
//
// A Table is an open-addressing hash table (linear probing, backward-shift
// deletion, no tombstones) whose slots live in one pointer-free []byte slab.
// Records are read and updated in place: there is no per-event copy, no
// append log and no ring buffer, so updating one device never displaces
// another (unlike fastcache, whose per-bucket ring evicts live entries under
// update churn).
//
// Invariants:
//
//   - One writer. A Table is owned by one worker goroutine (pipeline/shard
//     sends every event of a device to the same worker); it has no locks and
//     must not be used from several goroutines at once.
//   - What is kept: a record is visible (Record reports existed, Lookup
//     reports ok, Range yields it) as long as it has been idle for at most
//     Config.IdleTTL, where idle = table clock - the record's lastSeen, and the
//     table clock is the largest event time ever passed to Record (event time,
//     never the wall clock). Other devices' activity never removes it.
//   - What is lost, and when:
//     1. A record idle longer than IdleTTL reads as absent (a fresh zeroed
//     record, existed == false) and may be reclaimed at any time: by the
//     incremental sweep (a few slots per insertion), by a rebuild, or when
//     the device comes back. Counted in Stats.Expired. Because lastSeen is
//     kept at one-second resolution, a record may outlive its TTL by up to
//     one second; it never expires early.
//     2. With Config.MaxDevices > 0 and the table full, inserting a new device
//     evicts an old one: the least recently seen record among at least
//     evictWindow consecutive slots from the new record's home (an approximation of
//     LRU that costs O(evictWindow) instead of an index per event), one
//     that Config.Keep does not keep if there is one among them. Counted
//     in Stats.LiveEvictions (or Stats.Expired if that record had expired).
//     3. Delete removes a record.
//     Nothing else removes a record.
//   - Keys: a device is identified by the 128-bit (key, alt) pair; two devices
//     share a record only if both halves collide. Every key, including (0, 0),
//     is valid: slot occupancy is a flag, not a reserved key.
//   - Memory: slotSize = 24 + RecordSize rounded up to 8 bytes (key 8, alt 8,
//     lastSeen int32 seconds since 2020-01-01 + flags uint32, then the record).
//     The load factor stays <= 3/4 and the table doubles when it would exceed
//     it, so bytes per device = slotSize / load, between slotSize*4/3 (just
//     before a doubling, or when presized with InitialDevices or Reserve) and
//     slotSize*8/3 (just after one). For RecordSize 128: 152 bytes per slot,
//     203..405 bytes per device. A rebuild briefly holds the old and the new
//     slab (3x the old slab's size). With Config.HugePages a slab of 2 MiB
//     or more is allocated 2 MiB larger (its alignment).
//   - Allocation: Record, Lookup, Delete, Len, Stats and Range do not allocate,
//     except Record when the table grows or is rebuilt.
package state

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// Config of a Table.
type Config struct {
	// RecordSize is the size of a device record in bytes, in [1, 4096].
	RecordSize int
	// InitialDevices is the number of devices to preallocate room for
	// (default 1024). Presizing avoids rebuilds and keeps bytes per device at
	// its minimum.
	InitialDevices int
	// MaxDevices is a hard cap on the devices held (0 = unlimited). Beyond it,
	// inserting a device evicts an approximately least recently seen record,
	// counted in Stats.LiveEvictions.
	MaxDevices int
	// IdleTTL is how long (in event time) a record survives without an event
	// before it may be reclaimed (default 24h).
	IdleTTL time.Duration
	// Keep, when set, tells eviction which records are worth more than
	// others (a learned baseline, an offender being watched): when
	// MaxDevices is reached, the least recently seen record for which Keep
	// reports false is evicted among the slots searched, and a kept record
	// only when every one searched is kept. Keep must be pure and must not
	// retain rec. Nil: every record is worth the same (least recently seen
	// goes first).
	Keep func(rec []byte) bool
	// HugePages asks for the slab to be backed by transparent huge pages
	// (newSlab): a slab of at least 2 MiB is allocated 2 MiB larger and
	// 2 MiB-aligned, and advised MADV_HUGEPAGE (Linux; elsewhere, or where
	// the kernel's THP mode is never, the advice does nothing). A table
	// whose records are read at random (one per event, few per page) then
	// costs a TLB miss per record far less often: with 4 KiB pages a table
	// of a few MB outgrows the TLB, and in a virtual machine each miss
	// walks two page tables (bench/RESULTS.md, e4). What is kept, found
	// and evicted does not change; Stats.Bytes counts the allocation, slack
	// included.
	HugePages bool
}

// Stats describes a Table.
type Stats struct {
	Devices       int    // records held, including expired ones not yet reclaimed
	Capacity      int    // slots
	Bytes         int    // slab bytes allocated (with Config.HugePages, its alignment slack included)
	Grows         uint64 // rebuilds that changed the capacity
	Expired       uint64 // records reclaimed or reset because they were idle longer than IdleTTL
	LiveEvictions uint64 // records idle for at most IdleTTL removed because MaxDevices was reached
	// Probes counts the occupied slots Record stepped over before it found
	// a device or the empty slot where it inserts one: the cost of
	// clustering (linear probing at load <= 3/4 averages a few per call).
	Probes uint64
}

// Table holds one fixed-size record per device. See the package
// documentation for its invariants; in short: one goroutine only.
type Table struct {
	slab       []byte
	slabAlloc  int  // bytes allocated for slab (newSlab)
	huge       bool // Config.HugePages
	slotSize   int
	recordSize int
	capacity   int    // slots
	seed       uint64 // of home's hash: seedFor(capacity)
	n          int    // used slots
	maxDevices int    // 0 = unlimited
	maxCap     int    // capacity cap derived from maxDevices; 0 = unlimited
	ttl        int64
	clock      int64 // seconds since epoch: the largest event time seen by Record
	hand       int   // sweep and eviction hand
	keep       func(rec []byte) bool

	grows         uint64
	expired       uint64
	liveEvictions uint64
	probes        uint64
}

const (
	// Slot layout: [key 8][alt 8][lastSeen int32][flags uint32][record, padded to 8].
	offAlt     = 8
	offMeta    = 16
	slotHeader = 24

	flagUsed = uint64(1) << 32

	// epochUnix is 2020-01-01T00:00:00Z: lastSeen is int32 seconds since it,
	// which covers 1951-12-13 to 2088-01-19; event times beyond are clamped.
	epochUnix = 1577836800

	maxRecordSize         = 4096
	defaultInitialDevices = 1024
	defaultIdleTTL        = 24 * time.Hour

	// sweepStep is how many slots the expiry sweep examines per insertion.
	sweepStep = 8
	// evictWindow is how many consecutive slots are searched for the least
	// recently seen record when MaxDevices is reached.
	evictWindow = 64
	// keepWindow bounds the slots searched for a record Config.Keep does
	// not keep.
	keepWindow = 16 * evictWindow

	maxSlabBytes = 1 << 40
)

// NewTable returns an empty table for cfg.
func NewTable(cfg Config) (*Table, error) {
	if cfg.RecordSize < 1 || cfg.RecordSize > maxRecordSize {
		return nil, fmt.Errorf("cannot create state table: RecordSize %d must be in [1,%d]", cfg.RecordSize, maxRecordSize)
	}
	if cfg.InitialDevices < 0 {
		return nil, fmt.Errorf("cannot create state table: InitialDevices %d must be >= 0", cfg.InitialDevices)
	}
	if cfg.MaxDevices < 0 {
		return nil, fmt.Errorf("cannot create state table: MaxDevices %d must be >= 0", cfg.MaxDevices)
	}
	if cfg.IdleTTL < 0 {
		return nil, fmt.Errorf("cannot create state table: IdleTTL %q must be >= 0", cfg.IdleTTL)
	}
	t := &Table{
		recordSize: cfg.RecordSize,
		slotSize:   slotHeader + (cfg.RecordSize+7)&^7,
		maxDevices: cfg.MaxDevices,
		clock:      math.MinInt32,
		keep:       cfg.Keep,
	}
	ttl := cfg.IdleTTL
	if ttl == 0 {
		ttl = defaultIdleTTL
	}
	t.ttl = int64((ttl + time.Second - 1) / time.Second)
	initial := cfg.InitialDevices
	if initial == 0 {
		initial = defaultInitialDevices
	}
	if t.maxDevices > 0 {
		initial = min(initial, t.maxDevices)
		t.maxCap = capacityFor(t.maxDevices)
		if t.maxCap > maxSlabBytes/t.slotSize {
			return nil, fmt.Errorf("cannot create state table: MaxDevices %d needs more than %d slab bytes", cfg.MaxDevices, maxSlabBytes)
		}
	}
	capacity := capacityFor(initial)
	if capacity > maxSlabBytes/t.slotSize {
		return nil, fmt.Errorf("cannot create state table: InitialDevices %d needs more than %d slab bytes", cfg.InitialDevices, maxSlabBytes)
	}
	t.capacity, t.seed = capacity, seedFor(capacity)
	t.huge = cfg.HugePages
	t.slab, t.slabAlloc = newSlab(capacity*t.slotSize, t.huge)
	return t, nil
}

// seedFor returns the hash seed of a table of capacity slots: deterministic,
// so that a replay lays out (and evicts) alike, and different for each
// capacity (see home).
func seedFor(capacity int) uint64 {
	h := uint64(capacity) * 0x9e3779b97f4a7c15
	h ^= h >> 32
	h *= 0xd6e8feb86659fd93
	return h ^ h>>32
}

// capacityFor returns the slots needed to hold devices at load <= 3/4.
func capacityFor(devices int) int {
	return max((devices*4+2)/3, 2)
}

// Reserve makes room for devices records (up to the MaxDevices cap) at the
// table's load bound, rebuilding the table once if it is smaller, so that
// inserting that many devices, a checkpoint's restore for one, causes no
// further rebuild. It never shrinks the table.
func (t *Table) Reserve(devices int) {
	if t.maxDevices > 0 {
		devices = min(devices, t.maxDevices)
	}
	if c := capacityFor(devices); c > t.capacity {
		if c > maxSlabBytes/t.slotSize {
			c = maxSlabBytes / t.slotSize
		}
		t.resize(c)
	}
}

// Record returns the record of the device (key, alt) for in-place update,
// creating a zeroed one if it is absent or expired. rec is exactly RecordSize
// bytes and stays valid until the next call of any method on t; the caller
// must not retain it. now is the event time in Unix nanoseconds: it advances
// the table clock (the largest now seen) and sets the record's lastSeen.
// existed reports whether a live record was found.
//
// Record does not allocate, except when it rebuilds the table.
func (t *Table) Record(key, alt uint64, now int64) (rec []byte, existed bool) {
	sec := toSec(now)
	if int64(sec) > t.clock {
		t.clock = int64(sec)
	}
	i := t.home(key, alt)
	for ; ; t.probes++ {
		off := i * t.slotSize
		slot := t.slab[off : off+t.slotSize : off+t.slotSize]
		meta := binary.LittleEndian.Uint64(slot[offMeta:])
		if meta&flagUsed == 0 {
			break
		}
		if binary.LittleEndian.Uint64(slot) == key && binary.LittleEndian.Uint64(slot[offAlt:]) == alt {
			rec = slot[slotHeader : slotHeader+t.recordSize : slotHeader+t.recordSize]
			last := int32(uint32(meta))
			if t.isExpired(last) {
				t.expired++
				clear(rec)
				binary.LittleEndian.PutUint64(slot[offMeta:], flagUsed|uint64(uint32(sec)))
				return rec, false
			}
			if sec > last {
				binary.LittleEndian.PutUint64(slot[offMeta:], flagUsed|uint64(uint32(sec)))
			}
			return rec, true
		}
		if i++; i == t.capacity {
			i = 0
		}
	}
	return t.insert(key, alt, sec, i), false
}

// insert adds the absent device (key, alt) whose probe sequence ended at the
// empty slot i, and returns its zeroed record.
func (t *Table) insert(key, alt uint64, sec int32, i int) []byte {
	moved := t.sweep(sweepStep)
	if t.maxDevices > 0 && t.n >= t.maxDevices {
		t.evict(t.home(key, alt))
		moved = true
	} else if (t.n+1)*4 > t.capacity*3 {
		t.rebuild()
		moved = true
	}
	if moved {
		i = t.home(key, alt)
		for binary.LittleEndian.Uint64(t.slab[i*t.slotSize+offMeta:])&flagUsed != 0 {
			if i++; i == t.capacity {
				i = 0
			}
		}
	}
	off := i * t.slotSize
	slot := t.slab[off : off+t.slotSize : off+t.slotSize]
	binary.LittleEndian.PutUint64(slot, key)
	binary.LittleEndian.PutUint64(slot[offAlt:], alt)
	binary.LittleEndian.PutUint64(slot[offMeta:], flagUsed|uint64(uint32(sec)))
	rec := slot[slotHeader : slotHeader+t.recordSize : slotHeader+t.recordSize]
	clear(rec)
	t.n++
	return rec
}

// Prefetch starts bringing the slot where the probe for (key, alt) begins
// (the record is there or in the slots just after it, at the table's load)
// into the CPU's caches, without waiting for it, so that a Record or Lookup
// of it soon after does not wait for memory: the misses of several slots
// prefetched in a row, and the work that follows them, overlap (see
// entity.Owner.ObserveBatch). It only reads (the table and its statistics
// are unchanged), so calling it or not changes no result; like every
// method, it is for the table's one goroutine. At most the slot's first
// prefetchMax bytes are fetched.
func (t *Table) Prefetch(key, alt uint64) { t.prefetchSlot(key, alt, min(t.slotSize, prefetchMax)) }

// PrefetchKeys is Prefetch of each of keys (a key and its alt), in two
// passes: every slot's place first, then the prefetches back to back. A
// prefetch does not wait for its line, but one whose address misses the
// TLB holds up the instructions after it until its page walk ends; with
// nothing but prefetches between them, the walks of a batch overlap
// instead of each waiting behind the hashing of the next key
// (bench/RESULTS.md, e6). Like Prefetch, it changes nothing.
func (t *Table) PrefetchKeys(keys [][2]uint64) {
	var offs [prefetchKeysAtOnce]int
	n := min(t.slotSize, prefetchMax)
	for len(keys) > 0 {
		k := min(len(keys), len(offs))
		for i := range k {
			offs[i] = t.home(keys[i][0], keys[i][1]) * t.slotSize
		}
		for _, off := range offs[:k] {
			prefetchBytes(t.slab[off : off+n : off+n])
		}
		keys = keys[k:]
	}
}

// prefetchKeysAtOnce is the keys PrefetchKeys places before it prefetches
// them: about the misses a core keeps in flight.
const prefetchKeysAtOnce = 32

// PrefetchRecord is Prefetch of the whole slot where the probe for
// (key, alt) begins, whatever its size: for a record read across its
// length (a device's, whose detectors each read their own slice). Like
// Prefetch, it changes nothing.
func (t *Table) PrefetchRecord(key, alt uint64) { t.prefetchSlot(key, alt, t.slotSize) }

// prefetchSlot prefetches the first n bytes of the slot where the probe for
// (key, alt) begins.
func (t *Table) prefetchSlot(key, alt uint64, n int) {
	off := t.home(key, alt) * t.slotSize
	prefetchBytes(t.slab[off : off+n : off+n])
}

// prefetchMax bounds the bytes of a slot Prefetch fetches: four cache lines
// (an entity's slot is 152 bytes).
const prefetchMax = 256

// Lookup returns the live record of (key, alt) without inserting it and
// without touching the clock or lastSeen. rec aliases the table: treat it as
// read-only, and do not retain it past the next call on t.
func (t *Table) Lookup(key, alt uint64) (rec []byte, ok bool) {
	i, found := t.find(key, alt)
	if !found {
		return nil, false
	}
	off := i * t.slotSize
	if t.isExpired(t.lastSeen(off)) {
		return nil, false
	}
	return t.slab[off+slotHeader : off+slotHeader+t.recordSize : off+slotHeader+t.recordSize], true
}

// Delete removes the record of (key, alt) and reports whether a live
// (unexpired) record was there. An expired record is removed too.
func (t *Table) Delete(key, alt uint64) bool {
	i, found := t.find(key, alt)
	if !found {
		return false
	}
	live := !t.isExpired(t.lastSeen(i * t.slotSize))
	t.deleteAt(i)
	return live
}

// Len returns the number of records held, including expired records that
// have not been reclaimed yet.
func (t *Table) Len() int { return t.n }

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	return Stats{
		Devices:       t.n,
		Capacity:      t.capacity,
		Bytes:         t.slabAlloc,
		Grows:         t.grows,
		Expired:       t.expired,
		LiveEvictions: t.liveEvictions,
		Probes:        t.probes,
	}
}

// Range calls f for every live (unexpired) record in slot order, with its
// lastSeen in Unix nanoseconds (second resolution), until f returns false.
// f must not retain rec and must not call methods of t.
func (t *Table) Range(f func(key, alt uint64, lastSeen int64, rec []byte) bool) {
	for off := 0; off < len(t.slab); off += t.slotSize {
		slot := t.slab[off : off+t.slotSize : off+t.slotSize]
		meta := binary.LittleEndian.Uint64(slot[offMeta:])
		if meta&flagUsed == 0 {
			continue
		}
		last := int32(uint32(meta))
		if t.isExpired(last) {
			continue
		}
		lastNs := (int64(last) + epochUnix) * int64(time.Second)
		rec := slot[slotHeader : slotHeader+t.recordSize : slotHeader+t.recordSize]
		if !f(binary.LittleEndian.Uint64(slot), binary.LittleEndian.Uint64(slot[offAlt:]), lastNs, rec) {
			return
		}
	}
}

// find returns the slot of (key, alt), expired or not.
func (t *Table) find(key, alt uint64) (int, bool) {
	i := t.home(key, alt)
	for {
		off := i * t.slotSize
		if binary.LittleEndian.Uint64(t.slab[off+offMeta:])&flagUsed == 0 {
			return 0, false
		}
		if binary.LittleEndian.Uint64(t.slab[off:]) == key && binary.LittleEndian.Uint64(t.slab[off+offAlt:]) == alt {
			return i, true
		}
		if i++; i == t.capacity {
			i = 0
		}
	}
}

// home returns the first slot probed for (key, alt). Keys are remixed so
// that a shard choice made from DeviceKey's bits does not cluster one
// worker's devices in its table, and with a seed that depends on the
// capacity, so that records read out of a table of another capacity (Range
// yields them in slot order, which is the order of the hash) arrive in an
// order unrelated to this table's slots: inserted in the order of a table
// with the same hash function into a smaller one, they would all land in its
// first slots and cluster (issue 13: a 3M-device restore that did not end).
// Two tables of the same capacity share the function, which is harmless:
// records come out of one in an order that fills the other exactly as the
// first was filled.
func (t *Table) home(key, alt uint64) int {
	h := key ^ t.seed ^ alt*0x9e3779b97f4a7c15
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	hi, _ := bits.Mul64(h, uint64(t.capacity))
	return int(hi)
}

func (t *Table) lastSeen(off int) int32 {
	return int32(uint32(binary.LittleEndian.Uint64(t.slab[off+offMeta:])))
}

// isExpired reports whether a record last seen at second last has been idle
// longer than the TTL. With second resolution, clock-last > ttl implies the
// true idle time exceeds the TTL.
func (t *Table) isExpired(last int32) bool {
	return t.clock-int64(last) > t.ttl
}

// toSec converts Unix nanoseconds to seconds since epochUnix, clamped to int32.
func toSec(now int64) int32 {
	s := now / int64(time.Second)
	if now < 0 && now%int64(time.Second) != 0 {
		s--
	}
	s -= epochUnix
	return int32(min(max(s, math.MinInt32), math.MaxInt32))
}

// deleteAt empties slot i and shifts the following entries of its cluster
// back, so that every entry stays reachable from its home slot without
// tombstones.
func (t *Table) deleteAt(i int) {
	j := i
	for {
		if j++; j == t.capacity {
			j = 0
		}
		offJ := j * t.slotSize
		if binary.LittleEndian.Uint64(t.slab[offJ+offMeta:])&flagUsed == 0 {
			break
		}
		k := t.home(binary.LittleEndian.Uint64(t.slab[offJ:]), binary.LittleEndian.Uint64(t.slab[offJ+offAlt:]))
		// The entry at j may move to i only if its home k is not cyclically in (i, j].
		if i <= j {
			if i < k && k <= j {
				continue
			}
		} else if i < k || k <= j {
			continue
		}
		offI := i * t.slotSize
		copy(t.slab[offI:offI+t.slotSize], t.slab[offJ:offJ+t.slotSize])
		i = j
	}
	binary.LittleEndian.PutUint64(t.slab[i*t.slotSize+offMeta:], 0)
	t.n--
}

// sweep examines up to steps slots at the hand and reclaims expired records.
// It reports whether any slot changed.
func (t *Table) sweep(steps int) bool {
	moved := false
	for ; steps > 0; steps-- {
		if t.hand >= t.capacity {
			t.hand = 0
		}
		off := t.hand * t.slotSize
		meta := binary.LittleEndian.Uint64(t.slab[off+offMeta:])
		if meta&flagUsed != 0 && t.isExpired(int32(uint32(meta))) {
			// The backward shift may bring another entry into this slot: examine it again.
			t.deleteAt(t.hand)
			t.expired++
			moved = true
			continue
		}
		t.hand++
	}
	return moved
}

// evict removes the least recently seen record among at least evictWindow
// consecutive slots from start, the home slot of the record about to be
// inserted (the table is full, so it is not empty), preferring records that
// Config.Keep does not keep. Evicting where the insertion lands keeps the
// clusters of linear probing as short as without evictions: evicting at a
// hand that walks the table, as before, let the clusters where insertions
// land grow (a flood of new keys at a 100,000-record cap averaged 37 probes
// per insertion, with runs of 700 occupied slots; now a few).
func (t *Table) evict(start int) {
	if t.n == 0 {
		panic("BUG: state table: evict called on an empty table")
	}
	best, bestLast := -1, int32(math.MaxInt32)
	bestKept := true // best is a record Keep keeps (or there is none yet)
	i := start
	// Past the window, the search goes on (up to keepWindow slots) while it
	// has found only kept records.
	for scanned := 0; scanned < t.capacity && (scanned < evictWindow || best < 0 || bestKept && t.keep != nil && scanned < keepWindow); scanned++ {
		off := i * t.slotSize
		meta := binary.LittleEndian.Uint64(t.slab[off+offMeta:])
		if meta&flagUsed != 0 {
			last := int32(uint32(meta))
			kept := t.keep != nil && !t.isExpired(last) && t.keep(t.slab[off+slotHeader:off+slotHeader+t.recordSize])
			if best < 0 || (bestKept && !kept) || (kept == bestKept && last < bestLast) {
				best, bestLast, bestKept = i, last, kept
			}
		}
		if i++; i == t.capacity {
			i = 0
		}
	}
	if t.isExpired(bestLast) {
		t.expired++
	} else {
		t.liveEvictions++
	}
	t.deleteAt(best)
}

// rebuild rehashes the table into a new slab, dropping expired records. It
// doubles the capacity (up to the MaxDevices cap) unless dropping expired
// records leaves the table at most half full.
func (t *Table) rebuild() {
	live := 0
	for off := 0; off < len(t.slab); off += t.slotSize {
		meta := binary.LittleEndian.Uint64(t.slab[off+offMeta:])
		if meta&flagUsed != 0 && !t.isExpired(int32(uint32(meta))) {
			live++
		}
	}
	newCap := t.capacity
	if (live+1)*2 > t.capacity {
		newCap = t.capacity * 2
		if t.maxCap > 0 {
			newCap = min(newCap, t.maxCap)
		}
	}
	if newCap > maxSlabBytes/t.slotSize {
		panic(fmt.Sprintf("BUG: state table: capacity %d exceeds %d slab bytes", newCap, maxSlabBytes))
	}
	t.resize(newCap)
}

// resize rehashes the table into a new slab of newCap slots, dropping
// expired records.
func (t *Table) resize(newCap int) {
	old := t.slab
	t.slab, t.slabAlloc = newSlab(newCap*t.slotSize, t.huge)
	if newCap != t.capacity {
		t.grows++
	}
	t.capacity, t.seed = newCap, seedFor(newCap)
	t.n = 0
	t.hand = 0
	for off := 0; off < len(old); off += t.slotSize {
		meta := binary.LittleEndian.Uint64(old[off+offMeta:])
		if meta&flagUsed == 0 {
			continue
		}
		if t.isExpired(int32(uint32(meta))) {
			t.expired++
			continue
		}
		i := t.home(binary.LittleEndian.Uint64(old[off:]), binary.LittleEndian.Uint64(old[off+offAlt:]))
		for binary.LittleEndian.Uint64(t.slab[i*t.slotSize+offMeta:])&flagUsed != 0 {
			if i++; i == t.capacity {
				i = 0
			}
		}
		copy(t.slab[i*t.slotSize:(i+1)*t.slotSize], old[off:off+t.slotSize])
		t.n++
	}
}
