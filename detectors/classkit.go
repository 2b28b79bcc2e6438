package detectors

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
)

// The building blocks of class statistics (the ClassTable's and each
// detector's own, see ClassStats): fixed-size open-addressed tables of
// uint64 keys with parallel arrays of atomic words, safe for concurrent use,
// whose memory does not grow with devices or keys, and distinct-device
// sketches estimated by linear counting.

// TableSize rounds n up to a power of two, at least 1024: the size of a
// table Slot can probe.
func TableSize(n int) int {
	p := 1024
	for p < n {
		p <<= 1
	}
	return p
}

// MaxProbe bounds linear probing; a key not found within it is absent.
const MaxProbe = 64

// Slot returns key's index in keys (a table of TableSize slots, 0 marking an
// empty one; a key 0 is stored as 1), claiming an empty slot when insert is
// set; -1 when key is absent, or when it is new and its MaxProbe slots are
// taken. Safe for concurrent use; it does not allocate.
func Slot(keys []atomic.Uint64, key uint64, insert bool) int {
	if key == 0 {
		key = 1 // 0 marks an empty slot
	}
	mask := uint64(len(keys) - 1)
	for i := uint64(0); i < MaxProbe; i++ {
		j := (key + i) & mask
		k := keys[j].Load()
		if k == key {
			return int(j)
		}
		if k == 0 {
			if !insert {
				return -1
			}
			if keys[j].CompareAndSwap(0, key) || keys[j].Load() == key {
				return int(j)
			}
		}
	}
	return -1
}

// PairKey mixes a class key with another key (a command, a tagged country)
// into a table key.
func PairKey(class, x uint64) uint64 {
	return (class ^ (x * 0x9e3779b97f4a7c15)) * 0xff51afd7ed558ccd
}

// DeviceBit is the device's bit in a 64-bit device sketch. It uses the
// key's top bits (the shard uses bits 32-63 too, but every worker sees every
// bit value).
func DeviceBit(device uint64) uint { return uint(device >> 58) }

// LinearCount estimates distinct items from a bitmap of m bits with ones set.
// The sketch sizes in use (64 bits, 256 for volume's class failures, and a
// class's clsWords*64) read a table of the same values: sketches are counted
// on every event, and a logarithm per count was a third of the command
// detector's cost on a new command's path.
func LinearCount(m, ones int) float64 {
	switch {
	case m == 64 && uint(ones) <= 64:
		return linearCounts64[ones]
	case m == 256 && uint(ones) <= 256:
		return linearCounts256[ones]
	case m == clsWords*64 && uint(ones) <= clsWords*64:
		return linearCountsClass[ones]
	}
	return linearCount(m, ones)
}

// linearCount is LinearCount computed.
func linearCount(m, ones int) float64 {
	zeros := m - ones
	if zeros <= 0 {
		zeros = 1 // saturated: the estimator's ceiling, m·ln m
	}
	return float64(m) * math.Log(float64(m)/float64(zeros))
}

// linearCounts64, linearCounts256 and linearCountsClass are
// linearCount(m, ones) by ones for m = 64, 256 and clsWords*64.
var (
	linearCounts64 = func() (c [64 + 1]float64) {
		for ones := range c {
			c[ones] = linearCount(64, ones)
		}
		return c
	}()
	linearCounts256 = func() (c [256 + 1]float64) {
		for ones := range c {
			c[ones] = linearCount(256, ones)
		}
		return c
	}()
	linearCountsClass = func() (c [clsWords*64 + 1]float64) {
		for ones := range c {
			c[ones] = linearCount(clsWords*64, ones)
		}
		return c
	}()
)

// SetBit sets bit in w, writing only when it is not set yet (after warm-up,
// learning only reads).
func SetBit(w *atomic.Uint64, bit uint) {
	if m := uint64(1) << bit; w.Load()&m == 0 {
		w.Or(m)
	}
}

// KeepEarliest lowers the event time (Unix ns) in w to t when t is earlier
// or w holds none (0); a t at or before the epoch is not recorded. Safe for
// concurrent use; it does not allocate.
func KeepEarliest(w *atomic.Uint64, t int64) {
	if t <= 0 {
		return
	}
	for {
		old := w.Load()
		if old != 0 && int64(old) <= t || w.CompareAndSwap(old, uint64(t)) {
			return
		}
	}
}

// AddFloat adds v to the float64 held in w (its bits) and returns the new
// value.
func AddFloat(w *atomic.Uint64, v float64) float64 {
	for {
		old := w.Load()
		n := math.Float64frombits(old) + v
		if w.CompareAndSwap(old, math.Float64bits(n)) {
			return n
		}
	}
}

// ClaimSample is the bottom-1 device sample of a class's sample slot i
// (keys: the owning device's key | 1, 0 when empty; last: its last event
// time, Unix ns): device owns the slot when it already did, or takes it over
// when the slot is empty, its key is smaller than the owner's, or the owner
// has been silent more than staleSec at now. Every device is one sample
// however much it sends, and the sample is deterministic for a set of
// devices. taken says the slot just changed owner: its values are the
// previous owner's, for the caller to reset. Only the device's own worker
// writes its slot's values; it does not allocate.
func ClaimSample(keys, last []atomic.Uint64, i int, device uint64, now int64, staleSec float64) (owns, taken bool) {
	key := device | 1 // 0 marks an empty slot
	for {
		owner := keys[i].Load()
		if owner == key {
			return true, false
		}
		stale := float64(now-int64(last[i].Load()))/1e9 > staleSec
		if owner != 0 && key > owner && !stale {
			return false, false // another device is this slot's sample
		}
		if keys[i].CompareAndSwap(owner, key) {
			return true, true
		}
	}
}

// DeviceSketches is a fixed-size table of 64-bit sketches of the devices
// seen with a key (a class's command, country, ASN): distinct devices are
// estimated by linear counting, accurate to a few percent up to ~100 devices
// and saturating beyond. When the table is full, new keys are not learned
// (Saturated counts them): an unknown key then keeps looking new, which errs
// on the side of alerting. Safe for concurrent use.
//
// A slot's key and sketch are packed together (packedSlots, 16 bytes), so
// that a look-up misses the caches once; snapshots still hold the keys'
// column, then the sketches' (AppendWords).
//
// Merged across instances (MergeFrom, SetOverlay), the sketches OR: a key's
// devices are the union of this instance's and the others', exactly the
// sketch one instance seeing every device would hold.
type DeviceSketches struct {
	slots     packedSlots // key, sketch
	saturated atomic.Uint64
	overlay   atomic.Pointer[DeviceSketches] // other instances' (nil: none)
}

// NewDeviceSketches returns a table of TableSize(slots) keys (16 bytes each).
func NewDeviceSketches(slots int) *DeviceSketches {
	return &DeviceSketches{slots: newPackedSlots(slots, 2, 2)}
}

// Learn sets device's bit in key's sketch, claiming a slot for a new key.
// It does not allocate.
func (s *DeviceSketches) Learn(key, device uint64) {
	if j := s.slots.slot(key, true); j >= 0 {
		SetBit(s.slots.word(j, 1), DeviceBit(device))
	} else {
		s.saturated.Add(1)
	}
}

// Devices estimates how many distinct devices other than device are in key's
// sketch; 0 when key is absent. It does not allocate.
// With an overlay, it counts the union of this instance's and the others'.
func (s *DeviceSketches) Devices(key, device uint64) float64 {
	b, found := s.Sketch(key)
	if !found {
		return 0
	}
	b &^= 1 << DeviceBit(device)
	return LinearCount(64, bits.OnesCount64(b))
}

// Sketch returns key's sketch, the OR of this instance's and the overlay's,
// and whether either has the key. It does not allocate.
func (s *DeviceSketches) Sketch(key uint64) (uint64, bool) {
	var b uint64
	found := false
	if j := s.slots.slot(key, false); j >= 0 {
		b, found = s.slots.word(j, 1).Load(), true
	}
	if o := s.overlay.Load(); o != nil {
		if j := o.slots.slot(key, false); j >= 0 {
			b, found = b|o.slots.word(j, 1).Load(), true
		}
	}
	return b, found
}

// MergeFrom ORs other's own sketches (a table of the same size, another
// instance's contribution) into s's. It is for an accumulator no worker
// uses; keys that find s full are counted in Saturated.
func (s *DeviceSketches) MergeFrom(other *DeviceSketches) {
	for i := range other.slots.size() {
		key := other.slots.word(i, 0).Load()
		if key == 0 {
			continue
		}
		j := s.slots.slot(key, true)
		if j < 0 {
			s.saturated.Add(1)
			continue
		}
		if b := other.slots.word(i, 1).Load(); b != 0 {
			s.slots.word(j, 1).Or(b)
		}
	}
}

// SetOverlay makes o (filled by MergeFrom, never written after) the other
// instances' sketches that Devices adds to s's own; nil removes them.
func (s *DeviceSketches) SetOverlay(o *DeviceSketches) { s.overlay.Store(o) }

// Saturated returns how many Learn calls found the table full.
func (s *DeviceSketches) Saturated() uint64 { return s.saturated.Load() }

// Words is how many words AppendWords appends: the keys' column and the
// sketches', one word per slot each.
func (s *DeviceSketches) Words() int { return s.slots.words() }

// AppendWords appends the table's words to dst, the keys' column then the
// sketches', each little-endian in slot order: the encoding of AppendWords
// of the two arrays the table held before its slots were packed.
// Concurrent learning may or may not be included; take it while workers are
// stopped for an exact copy.
func (s *DeviceSketches) AppendWords(dst []byte) []byte { return s.slots.appendWords(dst) }

// LoadWords replaces the table's contents with words AppendWords wrote for
// a table of the same size; b of another length is an error, and the table
// is then unchanged.
func (s *DeviceSketches) LoadWords(b []byte) error { return s.slots.loadWords(b, "device sketches") }

// AppendWords appends every word of arrays to dst, little-endian, in order.
// Concurrent writers may or may not be included; take it while workers are
// stopped for an exact copy.
// It grows dst once, then writes in place (a contribution or a checkpoint
// is tens of megabytes of words).
func AppendWords(dst []byte, arrays ...[]atomic.Uint64) []byte {
	words := 0
	for _, arr := range arrays {
		words += len(arr)
	}
	at := len(dst)
	dst = slices.Grow(dst, 8*words)[:at+8*words]
	b := dst[at:]
	for _, arr := range arrays {
		for i := range arr {
			binary.LittleEndian.PutUint64(b[8*i:], arr[i].Load())
		}
		b = b[8*len(arr):]
	}
	return dst
}

// LoadWords replaces the contents of arrays with the words of b, as
// AppendWords wrote them for arrays of the same lengths. b of another length
// is an error, and arrays are then unchanged.
func LoadWords(b []byte, arrays ...[]atomic.Uint64) error {
	words := 0
	for _, arr := range arrays {
		words += len(arr)
	}
	if len(b) != 8*words {
		return fmt.Errorf("cannot load words: %d bytes, want %d", len(b), 8*words)
	}
	for _, arr := range arrays {
		for i := range arr {
			arr[i].Store(binary.LittleEndian.Uint64(b))
			b = b[8:]
		}
	}
	return nil
}

// AppendStatsHeader appends the header of a class statistics snapshot: its
// version and the sizes of its tables.
func AppendStatsHeader(dst []byte, version uint32, sizes ...int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, version)
	for _, n := range sizes {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(n))
	}
	return dst
}

// ReadStatsHeader checks the header AppendStatsHeader wrote at the start of
// b against version and sizes, and returns the rest of b. what names the
// statistics in the error.
func ReadStatsHeader(b []byte, what string, version uint32, sizes ...int) ([]byte, error) {
	if len(b) < 4+8*len(sizes) {
		return nil, fmt.Errorf("cannot load %s: %d bytes is too short", what, len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != version {
		return nil, fmt.Errorf("cannot load %s: version %d, want %d", what, v, version)
	}
	b = b[4:]
	for i, n := range sizes {
		if got := binary.LittleEndian.Uint64(b); got != uint64(n) {
			return nil, fmt.Errorf("cannot load %s: table %d has %d slots, this one %d", what, i, got, n)
		}
		b = b[8:]
	}
	return b, nil
}
