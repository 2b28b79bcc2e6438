package detectors

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync/atomic"
	"unsafe"
)

// packedSlots is the storage of an open-addressed table whose slots keep
// their words together: stride words per slot (a power of two, at most 8),
// aligned to stride·8 bytes, so that a slot's words share one cache line
// and a look-up and what it reads after the key miss the caches once, not
// once per word in arrays of their own (bench/RESULTS.md, a5). Word 0 is the
// key, as Slot keeps it; the first cols words are the table's, in the order
// of its snapshot's columns: snapshots hold one column per word (appendWords),
// the encoding of the arrays the tables had before they were packed.
type packedSlots struct {
	w      []atomic.Uint64
	mask   uint64 // slots - 1
	stride int
	cols   int
}

func newPackedSlots(slots, cols, stride int) packedSlots {
	n := TableSize(slots)
	w := make([]atomic.Uint64, (n+1)*stride) // a slot more, to align them
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(w))) % uintptr(8*stride)); r != 0 {
		off = (8*stride - r) / 8 // Go aligns w to 8 bytes at least
	}
	return packedSlots{w: w[off : off+n*stride : off+n*stride], mask: uint64(n - 1), stride: stride, cols: cols}
}

// size is the number of slots.
func (p *packedSlots) size() int { return int(p.mask) + 1 }

// word returns word k of slot j.
func (p *packedSlots) word(j, k int) *atomic.Uint64 { return &p.w[j*p.stride+k] }

// slot returns key's slot, claiming an empty one when insert is set; -1
// when key is absent, or new and its MaxProbe slots are taken. It probes
// as Slot does over an array of keys (the same slots in the same order, the
// same claim), so a key lands in the slot it had when the keys were an
// array of their own, and snapshots of either layout load into the other.
func (p *packedSlots) slot(key uint64, insert bool) int {
	if key == 0 {
		key = 1 // 0 marks an empty slot
	}
	for i := uint64(0); i < MaxProbe; i++ {
		j := int((key + i) & p.mask)
		w := p.word(j, 0)
		k := w.Load()
		if k == key {
			return j
		}
		if k == 0 {
			if !insert {
				return -1
			}
			if w.CompareAndSwap(0, key) || w.Load() == key {
				return j
			}
		}
	}
	return -1
}

// words is how many words appendWords appends.
func (p *packedSlots) words() int { return p.cols * p.size() }

// appendWords appends the slots' words to dst as columns (every slot's word
// 0, then word 1, ...), each little-endian in slot order. Concurrent
// writers may or may not be included; take it while workers are stopped
// for an exact copy.
func (p *packedSlots) appendWords(dst []byte) []byte {
	at, size := len(dst), 8*p.words()
	dst = slices.Grow(dst, size)[:at+size]
	b, n := dst[at:], p.size()
	for k := range p.cols {
		for j := range n {
			binary.LittleEndian.PutUint64(b[8*(k*n+j):], p.word(j, k).Load())
		}
	}
	return dst
}

// loadWords replaces the slots' words with those appendWords wrote for a
// table of the same size; b of another length is an error (what names the
// table), and the slots are then unchanged.
func (p *packedSlots) loadWords(b []byte, what string) error {
	if len(b) != 8*p.words() {
		return fmt.Errorf("cannot load %s: %d bytes, want %d", what, len(b), 8*p.words())
	}
	n := p.size()
	for k := range p.cols {
		for j := range n {
			p.word(j, k).Store(binary.LittleEndian.Uint64(b[8*(k*n+j):]))
		}
	}
	return nil
}
