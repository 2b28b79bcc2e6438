// Package checkpoint saves and restores the pipeline's learned state: every
// device's record (from the workers' state tables) and the class table, with the
// stream position they reflect, so that a restart neither resets baselines nor
// counts an event twice in them.
//
// File format, version 1, little-endian:
//
//	magic "IOTWCKPT" | format version u32 | layout version u32 | record size u32 | reserved u32
//	stream sequence u64 | created (Unix ns) i64 | record count u64
//	records: key u64 | alt u64 | last seen (Unix ns) i64 | record [record size]
//	class table: length u64 | detectors.ClassTable snapshot
//	CRC-32C of everything above, u32
//
// A file is written to a temporary name and renamed, so a crash leaves the
// previous checkpoint intact. A file that is truncated, corrupt, of another
// format version or of another record layout is rejected with an error that
// says which; the caller then cold-starts.
package checkpoint

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/state"
)

const (
	magic         = "IOTWCKPT"
	formatVersion = 1
	headerSize    = 8 + 4*4 + 8*3
	recordHeader  = 24
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Meta describes a checkpoint.
type Meta struct {
	LayoutVersion uint32
	RecordSize    int
	StreamSeq     uint64 // the last stream sequence whose events the state includes
	Created       time.Time
	Records       uint64
}

// ErrIncompatible marks a checkpoint written for another record layout (other
// detectors or versions): not corrupt, just not usable by this build.
var ErrIncompatible = errors.New("checkpoint is incompatible")

// Write saves the live records of tables and the class table to path
// atomically. The tables and fleet must not change during the call (workers
// stopped).
func Write(path string, meta Meta, tables []*state.Table, fleet *detectors.ClassTable) error {
	var n uint64
	for _, t := range tables {
		t.Range(func(_, _ uint64, _ int64, _ []byte) bool { n++; return true })
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create checkpoint %q: %w", tmp, err)
	}
	defer os.Remove(tmp) // after a successful rename this is a no-op
	h := crc32.New(crcTable)
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)

	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, formatVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, meta.LayoutVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(meta.RecordSize))
	hdr = binary.LittleEndian.AppendUint32(hdr, 0)
	hdr = binary.LittleEndian.AppendUint64(hdr, meta.StreamSeq)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(time.Now().UnixNano()))
	hdr = binary.LittleEndian.AppendUint64(hdr, n)
	w.Write(hdr)

	var rh [recordHeader]byte
	var werr error
	for _, t := range tables {
		t.Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
			if len(rec) != meta.RecordSize {
				werr = fmt.Errorf("BUG: record of %d bytes in a layout of %d", len(rec), meta.RecordSize)
				return false
			}
			binary.LittleEndian.PutUint64(rh[0:], key)
			binary.LittleEndian.PutUint64(rh[8:], alt)
			binary.LittleEndian.PutUint64(rh[16:], uint64(lastSeen))
			w.Write(rh[:])
			_, werr = w.Write(rec)
			return werr == nil
		})
		if werr != nil {
			f.Close()
			return fmt.Errorf("cannot write checkpoint %q: %w", tmp, werr)
		}
	}
	var fleetSnap []byte
	if fleet != nil {
		fleetSnap = fleet.AppendSnapshot(nil)
	}
	w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(fleetSnap))))
	w.Write(fleetSnap)
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("cannot write checkpoint %q: %w", tmp, err)
	}
	if _, err := f.Write(binary.LittleEndian.AppendUint32(nil, h.Sum32())); err != nil {
		f.Close()
		return fmt.Errorf("cannot write checkpoint %q: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cannot sync checkpoint %q: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot close checkpoint %q: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot rename checkpoint into %q: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Read restores a checkpoint: it calls put for every record, then loads the
// class table. want gives the layout version and record size this build uses.
// Records are handed to put before the checksum at the end is verified: on
// any error the caller must discard what put received and cold-start.
func Read(path string, want Meta, put func(key, alt uint64, lastSeen int64, rec []byte), fleet *detectors.ClassTable) (Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, fmt.Errorf("cannot open checkpoint %q: %w", path, err)
	}
	defer f.Close()
	h := crc32.New(crcTable)
	r := bufio.NewReaderSize(f, 1<<20)
	body := io.TeeReader(r, h)
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(body, hdr); err != nil {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: header: %w", path, err)
	}
	if string(hdr[:8]) != magic {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: not an iotwatch checkpoint", path)
	}
	if v := binary.LittleEndian.Uint32(hdr[8:]); v != formatVersion {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: format version %d, this build reads %d: %w", path, v, formatVersion, ErrIncompatible)
	}
	m := Meta{
		LayoutVersion: binary.LittleEndian.Uint32(hdr[12:]),
		RecordSize:    int(binary.LittleEndian.Uint32(hdr[16:])),
		StreamSeq:     binary.LittleEndian.Uint64(hdr[24:]),
		Created:       time.Unix(0, int64(binary.LittleEndian.Uint64(hdr[32:]))),
		Records:       binary.LittleEndian.Uint64(hdr[40:]),
	}
	if m.LayoutVersion != want.LayoutVersion || m.RecordSize != want.RecordSize {
		return m, fmt.Errorf("cannot read checkpoint %q: record layout %08x of %d bytes, this build uses %08x of %d bytes: %w",
			path, m.LayoutVersion, m.RecordSize, want.LayoutVersion, want.RecordSize, ErrIncompatible)
	}
	buf := make([]byte, recordHeader+m.RecordSize)
	for i := uint64(0); i < m.Records; i++ {
		if _, err := io.ReadFull(body, buf); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: record %d of %d: %w", path, i, m.Records, err)
		}
		put(binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:]), int64(binary.LittleEndian.Uint64(buf[16:])), buf[recordHeader:])
	}
	var lb [8]byte
	if _, err := io.ReadFull(body, lb[:]); err != nil {
		return m, fmt.Errorf("cannot read checkpoint %q: class table length: %w", path, err)
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > 1<<32 {
		return m, fmt.Errorf("cannot read checkpoint %q: class table of %d bytes is corrupt", path, n)
	}
	snap := make([]byte, n)
	if _, err := io.ReadFull(body, snap); err != nil {
		return m, fmt.Errorf("cannot read checkpoint %q: class table: %w", path, err)
	}
	sum := h.Sum32()
	var cb [4]byte
	if _, err := io.ReadFull(r, cb[:]); err != nil {
		return m, fmt.Errorf("cannot read checkpoint %q: checksum: %w", path, err)
	}
	if got := binary.LittleEndian.Uint32(cb[:]); got != sum {
		return m, fmt.Errorf("cannot read checkpoint %q: checksum %08x, computed %08x: the file is corrupt", path, got, sum)
	}
	if _, err := r.ReadByte(); err != io.EOF {
		return m, fmt.Errorf("cannot read checkpoint %q: data after the checksum", path)
	}
	if fleet != nil && n > 0 {
		if err := fleet.LoadSnapshot(snap); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
	}
	return m, nil
}
