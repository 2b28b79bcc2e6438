package worker

import (
	"encoding/binary"
	"math"
	"math/bits"
	"net/netip"

	"github.com/iotwatch/iotwatch/schemas"
)

// identities keeps, per device of a worker, what a row needs to name it when
// the device itself sends nothing (a silence found by the sweep): the text
// fields of its last event (tenant, device, API key, class, firmware, source
// id) and its source kind, id method, protocol, client IP, country and ASN.
// State records hold only the device's hashes.
//
// Only devices a Sweeper could report silent have one (rememberIdentity): a
// device without a baseline is never reported, so a flood of new device ids
// costs no identities. An identity takes about 155 bytes (a 46-byte fixed
// part, the texts, and its index entry; bench/RESULTS.md, "Memory per device").
//
// It is built for the garbage collector: the index maps the 128-bit device
// key to an offset and a fingerprint of the identity (no pointers, so the map
// is never scanned) and the entries live in one []byte arena. Per event, the
// fingerprint of the event's identity is compared with the index's: the
// arena is touched only when an identity is new or changed (a fingerprint
// collision, 1 in 2^32, leaves an old identity in place until the next
// change). Rewriting an entry appends it and leaves the old bytes as
// garbage; the arena is compacted in place when its garbage exceeds its live
// bytes. Entries of devices the state table no longer holds are dropped by
// prune, which the worker runs on a sweep when the store holds more devices
// than the table's live records, and whenever the index doubles between
// sweeps; the store thus holds at most about twice the table's devices (and
// minPruneAt).
type identities struct {
	index   map[[2]uint64]idRef // device key → its entry in arena
	arena   []byte
	garbage int    // arena bytes of replaced or dropped entries
	scratch []byte // the entry being written
}

// idRef locates a device's entry and fingerprints the identity it holds.
type idRef struct {
	off uint32 // offset in arena
	fp  uint32 // fingerprint (identityPrint)
}

// Entry layout, little-endian:
//
//	0:4    entry size (uint32)
//	4:20   device key, alt (uint64, uint64)
//	20     source kind, 21 id method, 22 protocol
//	23     client IP: 0 none, 4 IPv4, 6 IPv6
//	24:40  client IP, 16 bytes (As16)
//	40:42  country
//	42:46  ASN (uint32)
//	46:    tenant, device, API key, class, firmware, source id: each a
//	       uint16 length and at most maxIdentityField bytes
const (
	idFixed          = 46
	maxIdentityField = 4096
	// minCompact is the smallest garbage worth a compaction.
	minCompact = 64 << 10
)

// identityFields lists ev's text fields in entry order.
func identityFields(ev *schemas.Event) [6][]byte {
	return [6][]byte{ev.Tenant, ev.Device, ev.APIKey, ev.Class, ev.Firmware, ev.SourceID}
}

func newIdentities() *identities {
	return &identities{index: map[[2]uint64]idRef{}}
}

// appendIdentity appends the entry of ev's device to dst.
func appendIdentity(dst []byte, ev *schemas.Event) []byte {
	start := len(dst)
	var fixed [idFixed]byte
	binary.LittleEndian.PutUint64(fixed[4:], ev.DeviceKey)
	binary.LittleEndian.PutUint64(fixed[12:], ev.DeviceAlt)
	fixed[20], fixed[21], fixed[22] = byte(ev.Source), byte(ev.IDMethod), byte(ev.Protocol)
	fixed[23] = ipKind(ev.ClientIP)
	ip := ev.ClientIP.As16()
	copy(fixed[24:40], ip[:])
	fixed[40], fixed[41] = ev.Country[0], ev.Country[1]
	binary.LittleEndian.PutUint32(fixed[42:], ev.ASN)
	dst = append(dst, fixed[:]...)
	for _, f := range identityFields(ev) {
		f = f[:min(len(f), maxIdentityField)]
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(f)))
		dst = append(dst, f...)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// see records ev's device as last seen in ev, unless its entry already says
// so. The common case (an unchanged identity) costs a fingerprint of ev's
// identity and one map lookup, and allocates nothing.
func (s *identities) see(ev *schemas.Event) {
	key, fp := [2]uint64{ev.DeviceKey, ev.DeviceAlt}, identityPrint(ev)
	ref, ok := s.index[key]
	if ok {
		if ref.fp == fp {
			return
		}
		s.drop(key, ref)
	}
	s.scratch = appendIdentity(s.scratch[:0], ev)
	if len(s.arena)+len(s.scratch) > math.MaxUint32 {
		// Offsets are 32-bit; only garbage makes an arena of 4 GiB.
		s.compact()
		if len(s.arena)+len(s.scratch) > math.MaxUint32 {
			panic("BUG: worker: device identities exceed 4 GiB")
		}
	}
	s.index[key] = idRef{off: uint32(len(s.arena)), fp: fp}
	s.arena = append(s.arena, s.scratch...)
	s.compactIfWasteful()
}

// current reports whether ev's device has an entry that holds ev's identity
// (as far as the fingerprint tells): then see(ev) would change nothing.
func (s *identities) current(ev *schemas.Event) bool {
	ref, ok := s.index[[2]uint64{ev.DeviceKey, ev.DeviceAlt}]
	return ok && ref.fp == identityPrint(ev)
}

// identityPrint fingerprints what an entry holds of ev beyond its device key:
// the class through ClassKey, the other texts through schemas.Hash.
func identityPrint(ev *schemas.Event) uint32 {
	ip := ev.ClientIP.As16()
	h := uint64(ev.Source) | uint64(ev.IDMethod)<<8 | uint64(ev.Protocol)<<16 | uint64(ipKind(ev.ClientIP))<<24 |
		uint64(ev.Country[0])<<32 | uint64(ev.Country[1])<<40
	h = fold(h, uint64(ev.ASN))
	h = fold(h, binary.LittleEndian.Uint64(ip[:8]))
	h = fold(h, binary.LittleEndian.Uint64(ip[8:]))
	h = fold(h, ev.ClassKey)
	h = fold(h, schemas.Hash(ev.APIKey[:min(len(ev.APIKey), maxIdentityField)]))
	h = fold(h, schemas.Hash(ev.Firmware[:min(len(ev.Firmware), maxIdentityField)]))
	h = fold(h, schemas.Hash(ev.SourceID[:min(len(ev.SourceID), maxIdentityField)]))
	return uint32(h ^ h>>32)
}

// fold mixes v into h (a multiply-fold step, as schemas.Hash's).
func fold(h, v uint64) uint64 {
	hi, lo := bits.Mul64(h^v, 0xa0761d6478bd642f)
	return hi ^ lo
}

// ipKind is an entry's client IP kind: 0 none, 4 IPv4, 6 IPv6.
func ipKind(ip netip.Addr) byte {
	switch {
	case ip.Is4():
		return 4
	case ip.IsValid():
		return 6
	}
	return 0
}

// entry returns the entry at off.
func (s *identities) entry(off uint32) []byte {
	n := binary.LittleEndian.Uint32(s.arena[off:])
	return s.arena[off : off+n : off+n]
}

// load fills ev with the identity of device key, and reports whether there is
// one. ev is reset first; it gets no time, command or event id.
func (s *identities) load(key [2]uint64, ev *schemas.Event) bool {
	ref, ok := s.index[key]
	if !ok {
		return false
	}
	e := s.entry(ref.off)
	ev.Reset()
	ev.Source, ev.IDMethod, ev.Protocol = schemas.SourceKind(e[20]), schemas.IDMethod(e[21]), schemas.Protocol(e[22])
	switch ip := [16]byte(e[24:40]); e[23] {
	case 4:
		ev.ClientIP = netip.AddrFrom16(ip).Unmap()
	case 6:
		ev.ClientIP = netip.AddrFrom16(ip)
	}
	ev.Country = schemas.Country{e[40], e[41]}
	ev.ASN = binary.LittleEndian.Uint32(e[42:])
	var text [6][]byte
	rest := e[idFixed:]
	for i := range text {
		n := int(binary.LittleEndian.Uint16(rest))
		text[i], rest = rest[2:2+n], rest[2+n:]
	}
	ev.SetDevice(text[0], text[1])
	ev.SetText(&ev.APIKey, text[2])
	ev.SetClass(text[3])
	ev.SetText(&ev.Firmware, text[4])
	ev.SetText(&ev.SourceID, text[5])
	// The record's key, whatever the hashes of truncated fields would say.
	ev.DeviceKey, ev.DeviceAlt = key[0], key[1]
	return true
}

// prune drops the entries of devices for which live reports false.
func (s *identities) prune(live func(key, alt uint64) bool) {
	for k, ref := range s.index {
		if !live(k[0], k[1]) {
			s.drop(k, ref)
		}
	}
	s.compactIfWasteful()
}

// drop forgets key's entry: its bytes are garbage, which compact reclaims.
func (s *identities) drop(key [2]uint64, ref idRef) {
	s.garbage += len(s.entry(ref.off))
	delete(s.index, key)
}

// compactIfWasteful compacts the arena when its garbage exceeds its live
// bytes (and minCompact), so that compactions cost O(1) per garbage byte.
func (s *identities) compactIfWasteful() {
	if s.garbage > minCompact && s.garbage > len(s.arena)-s.garbage {
		s.compact()
	}
}

// compact moves the live entries to the front of the arena, in order, and
// shrinks it when it is mostly empty. An entry is live when the index points
// at it.
func (s *identities) compact() {
	w := 0
	for r := 0; r < len(s.arena); {
		n := int(binary.LittleEndian.Uint32(s.arena[r:]))
		key := [2]uint64{binary.LittleEndian.Uint64(s.arena[r+4:]), binary.LittleEndian.Uint64(s.arena[r+12:])}
		if ref, ok := s.index[key]; ok && int(ref.off) == r {
			copy(s.arena[w:], s.arena[r:r+n])
			s.index[key] = idRef{off: uint32(w), fp: ref.fp}
			w += n
		}
		r += n
	}
	s.arena, s.garbage = s.arena[:w], 0
	if cap(s.arena) > 4*w+minCompact {
		s.arena = append(make([]byte, 0, 2*w), s.arena...)
	}
}

// len returns the number of devices held.
func (s *identities) len() int { return len(s.index) }

// bytes returns the arena's size, garbage included.
func (s *identities) bytes() int { return len(s.arena) }

// memory estimates the bytes s holds: the arena's capacity and the index
// (a map entry of 24 bytes plus its control byte, at the map's 7/8 load).
func (s *identities) memory() int { return cap(s.arena) + cap(s.scratch) + len(s.index)*25*8/7 }
