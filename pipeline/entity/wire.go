package entity

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/iotwatch/iotwatch/schemas"
)

// Observations travel between the ingest stage and the entity owners of
// other instances as batches of fixed-size records, the layout documented
// (and versioned) in schemas (ObsBatchVersion, ObsRecordSize): the ingest
// stage appends each event's observations to the batch of their entity
// partition (ObsPartition), and the owner of that partition decodes them.

// Flags of an observation record.
const (
	wireIs4    = 1
	wireIPDev  = 2
	wireFailed = 4
	wireForKey = 8
)

// AppendObsHeader appends an observation batch's header to dst.
func AppendObsHeader(dst []byte) []byte {
	return append(dst, schemas.ObsBatchVersion, 0, byte(schemas.ObsRecordSize), byte(schemas.ObsRecordSize>>8))
}

// AppendObs appends ob's record to dst (a batch begun with
// AppendObsHeader). It does not allocate when dst has room.
func AppendObs(dst []byte, ob *Obs) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, schemas.ObsRecordSize)...)
	r := dst[n : n+schemas.ObsRecordSize]
	copy(r, ob.Addr[:])
	binary.LittleEndian.PutUint64(r[16:], ob.Seq)
	binary.LittleEndian.PutUint64(r[24:], ob.ID)
	binary.LittleEndian.PutUint64(r[32:], uint64(ob.Time))
	binary.LittleEndian.PutUint64(r[40:], ob.Device)
	binary.LittleEndian.PutUint64(r[48:], ob.Route)
	binary.LittleEndian.PutUint32(r[56:], ob.Line)
	var f byte
	if ob.Is4 {
		f |= wireIs4
	}
	if ob.IPDev {
		f |= wireIPDev
	}
	if ob.Failed {
		f |= wireFailed
	}
	if ob.ForKey {
		f |= wireForKey
	}
	r[60], r[61], r[62] = f, ob.Outcome, ob.KeyLen
	copy(r[63:63+MaxKeyText], ob.Key[:])
	r[111] = ob.ClassLen
	return dst
}

// ObsCount checks an observation batch's header and length and returns how
// many observations it holds (ReadObs reads them).
func ObsCount(batch []byte) (int, error) {
	if len(batch) < schemas.ObsHeaderSize {
		return 0, fmt.Errorf("cannot read an observation batch: %d bytes, shorter than its header", len(batch))
	}
	if v := batch[0]; v != schemas.ObsBatchVersion {
		return 0, fmt.Errorf("cannot read an observation batch: version %d, this build reads %d", v, schemas.ObsBatchVersion)
	}
	if size := int(binary.LittleEndian.Uint16(batch[2:])); size != schemas.ObsRecordSize {
		return 0, fmt.Errorf("cannot read an observation batch: records of %d bytes, want %d", size, schemas.ObsRecordSize)
	}
	body := len(batch) - schemas.ObsHeaderSize
	if body%schemas.ObsRecordSize != 0 {
		return 0, fmt.Errorf("cannot read an observation batch: %d bytes of records, not a multiple of %d", body, schemas.ObsRecordSize)
	}
	return body / schemas.ObsRecordSize, nil
}

// ReadObs reads observation i of batch (checked by ObsCount) into ob. A key
// length beyond MaxKeyText reads as MaxKeyText. It does not allocate.
func ReadObs(batch []byte, i int, ob *Obs) {
	off := schemas.ObsHeaderSize + i*schemas.ObsRecordSize
	r := batch[off : off+schemas.ObsRecordSize]
	copy(ob.Addr[:], r[:16])
	ob.Seq = binary.LittleEndian.Uint64(r[16:])
	ob.ID = binary.LittleEndian.Uint64(r[24:])
	ob.Time = int64(binary.LittleEndian.Uint64(r[32:]))
	ob.Device = binary.LittleEndian.Uint64(r[40:])
	ob.Route = binary.LittleEndian.Uint64(r[48:])
	ob.Line = binary.LittleEndian.Uint32(r[56:])
	f := r[60]
	ob.Is4, ob.IPDev, ob.Failed, ob.ForKey = f&wireIs4 != 0, f&wireIPDev != 0, f&wireFailed != 0, f&wireForKey != 0
	ob.Outcome, ob.KeyLen = r[61], min(r[62], MaxKeyText)
	copy(ob.Key[:], r[63:63+MaxKeyText])
	ob.ClassLen, ob.Class = 0, 0
	if n := r[111]; n > 0 && !ob.ForKey && int(ob.KeyLen)+int(n) <= MaxKeyText {
		ob.ClassLen = n
		ob.Class = schemas.Hash2(ob.Key[:ob.KeyLen], ob.Key[ob.KeyLen:ob.KeyLen+n])
	}
}

// AddrKeys returns the state keys (key, alt) of the records of addr and of
// its prefix (/24 or /48): where tools and tests find an address's entity
// records in a table or a checkpoint.
func AddrKeys(addr netip.Addr) (ip, prefix [2]uint64) {
	ob := Obs{Addr: addr.As16(), Is4: addr.Is4() || addr.Is4In6()}
	ip[0], ip[1] = keyOf(kindIP, ob.Addr)
	prefix[0], prefix[1] = keyOf(kindPrefix, ob.prefixAddr())
	return ip, prefix
}
