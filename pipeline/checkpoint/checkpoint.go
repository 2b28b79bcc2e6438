// Package checkpoint saves and restores the pipeline's learned state: every
// device's record (from the workers' state tables), the class table and each
// detector's class statistics, with the stream position they reflect, so that
// a restart neither resets baselines nor counts an event twice in them.
//
// File format, version 5, little-endian:
//
//	magic "IOTWCKPT" | format version u32 | layout version u32 | record size u32 | slice count u32
//	stream sequence u64 | created (Unix ns) i64 | record count u64
//	slice table, per detector slice: name length u32 | name | size u32 | version u32 | offset u32
//	records: key u64 | alt u64 | last seen (Unix ns) i64 | record [record size]
//	class table: length u64 | detectors.ClassTable snapshot
//	per slice, in the slice table's order: length u64 | the detector's ClassStats snapshot (length 0: none)
//	decision engines: count u32 | per engine, in worker order: length u64 | decide.Engine.AppendState snapshot
//	entities: record size u32 | record count u64 | records: key u64 | alt u64 | last seen (Unix ns) i64 | record [record size]
//	entity decision engines: count u32 | per entity owner, in order: length u64 | decide.Engine.AppendState snapshot
//	calibration: length u64 | decide.Calibration.AppendSnapshot snapshot (length 0: none)
//	incidents: length u64 | incident.Grouper.AppendState snapshot (length 0: none)
//	CRC-32C of everything above, u32
//
// Version 4 is version 5 without the incidents' section (still read:
// Meta.Incidents is nil, and the grouper starts with no open incident).
// Version 3 is version 4 without the entities' and the calibration's
// sections, version 2 version 3 without the decision engines' section; both
// are still read (no entities are restored and Meta.Calibration is nil: the
// calibration warms up again; with version 2, Meta.Engines is nil: the
// engines start empty). Entity records (package entity) are opaque here:
// they are handed to Target.PutEntity as they are, and the caller checks
// their version.
//
// A record is the worker's header (worker.HeaderSize bytes, the layout
// version in its first four) followed by the detectors' slices. Restored
// under another layout (a detector added, removed, resized or of another
// Version), each slice of the current layout whose name, size and version
// match a slice of the file is copied byte for byte, the others read as
// zeros (a cold start of that detector alone), and the header keeps the
// record's stream position with the current layout version (the fields of a
// header longer than the file's read as zeros). A detector's
// class statistics are restored by name, and only by their own snapshot's
// version: statistics a detector cannot load are left empty (it relearns its
// classes) and reported in Meta.Cold.
//
// Restoring takes time linear in the records: Load tells the caller the
// record count before the first record (Target.Reserve), so that the tables
// are sized once, reports progress, and stops when its context ends (3M
// devices: about a second, bench/RESULTS.md).
//
// Encode and Decode write and read the same format on any stream: the
// Object Store checkpoint (pipeline.Config.CheckpointStore) saves one per
// partition, each holding a subset of the records (Meta.Keep,
// Meta.KeepEntity) with the stream position it covers, and one holding the
// class statistics and the calibration with no records.
//
// A file is written to a temporary name and renamed, so a crash leaves the
// previous checkpoint intact. A file that is truncated, corrupt or of another
// format version (version 1, from before the slice table, included: its
// class table held every detector's statistics in one snapshot) is rejected
// with an error that says which; the caller then cold-starts.
package checkpoint

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/pipeline/worker"
)

const (
	magic         = "IOTWCKPT"
	formatVersion = 5
	// formatNoIncidents is the previous format version, without the
	// incident grouper's section, still read.
	formatNoIncidents = 4
	// formatNoEntities is the version before, without the
	// entities' sections, still read.
	formatNoEntities = 3
	// formatNoEngines is the version before, without the decision
	// engines' section, still read.
	formatNoEngines = 2
	// maxEntityRecord bounds an entity record's size in a file.
	maxEntityRecord = 4096
	// maxEngines bounds the engine count of a file.
	maxEngines   = 1 << 16
	headerSize   = 8 + 4*4 + 8*3
	recordHeader = 24
	// maxSlices and maxName bound the slice table of a file.
	maxSlices = 1024
	maxName   = 256
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Slice is one detector's part of a record.
type Slice struct {
	Name    string // the detector's name
	Offset  int    // in the record, header included
	Size    int    // the detector's StateSize
	Version uint32 // the detector's Spec.Version
}

// Meta describes a checkpoint.
type Meta struct {
	LayoutVersion uint32
	RecordSize    int
	// Slices is the record's slice table; empty for records that are opaque
	// (restored only into the same LayoutVersion and RecordSize).
	Slices    []Slice
	StreamSeq uint64 // the last stream sequence whose events the state includes
	Created   time.Time
	Records   uint64
	// Cold, from Read: the detectors of the current layout whose slices
	// (new, or of another size or version) or class statistics were not
	// restored.
	Cold []string
	// Engines are the decision engines' snapshots (decide.Engine.AppendState),
	// one per worker in worker order: what Write saves and Read returns.
	// Read returns nil for a file of format version 2, which has none, and a
	// non-nil slice (possibly empty) otherwise.
	Engines [][]byte
	// EntityTables are the entity owners' tables Write saves (records of
	// EntityRecordSize bytes); Read does not set them.
	EntityTables     []*state.Table
	EntityRecordSize int
	// Entities is the number of entity records Read found (0 in a file of
	// format version 3 or older), and EntityEngines the entity owners'
	// decision engines' snapshots (nil in such a file).
	Entities      uint64
	EntityEngines [][]byte
	// Calibration is the decision engines' shared calibration snapshot
	// (decide.Calibration.AppendSnapshot): what Write saves and Read
	// returns; nil when none was saved (or from a file of format 2 or 3).
	Calibration []byte
	// Incidents is the incident grouper's state (incident.Grouper.
	// AppendState, the collector's open incidents): what Write saves and
	// Read returns; nil when none was saved (or from a file of format 4 or
	// older).
	Incidents []byte
	// Keep, when set, selects the device records Write and Encode save (a
	// partition's, see package doc): the others are left out. KeepEntity
	// does the same for entity records. Read does not set them.
	Keep       func(key, alt uint64) bool
	KeepEntity func(rec []byte) bool
}

// MetaOf returns the Meta of records laid out by l.
func MetaOf(l *worker.Layout) Meta {
	m := Meta{LayoutVersion: l.Version, RecordSize: l.Size}
	for i, s := range l.Detectors.Specs {
		m.Slices = append(m.Slices, Slice{Name: s.Name, Offset: worker.HeaderSize + l.Detectors.Offsets[i],
			Size: s.StateSize, Version: s.Version})
	}
	return m
}

// ErrIncompatible marks a checkpoint this build cannot use (another format
// version, or opaque records of another layout): not corrupt, just not
// usable.
var ErrIncompatible = errors.New("checkpoint is incompatible")

// keepFunc is a record filter: nil keeps every record.
type keepFunc func(key, alt uint64, rec []byte) bool

// countRecords returns the live records of tables that keep accepts (Range's:
// expired ones not yet reclaimed are left out, as writeRecords leaves them).
func countRecords(tables []*state.Table, keep keepFunc) uint64 {
	var n uint64
	for _, t := range tables {
		t.Range(func(key, alt uint64, _ int64, rec []byte) bool {
			if keep == nil || keep(key, alt, rec) {
				n++
			}
			return true
		})
	}
	return n
}

// writeRecords writes the live records of tables that keep accepts to w,
// each as key u64 | alt u64 | last seen i64 | the record of size bytes.
func writeRecords(w io.Writer, tables []*state.Table, size int, keep keepFunc) error {
	var rh [recordHeader]byte
	var err error
	for _, t := range tables {
		t.Range(func(key, alt uint64, lastSeen int64, rec []byte) bool {
			if keep != nil && !keep(key, alt, rec) {
				return true
			}
			if len(rec) != size {
				err = fmt.Errorf("BUG: record of %d bytes in a layout of %d", len(rec), size)
				return false
			}
			binary.LittleEndian.PutUint64(rh[0:], key)
			binary.LittleEndian.PutUint64(rh[8:], alt)
			binary.LittleEndian.PutUint64(rh[16:], uint64(lastSeen))
			w.Write(rh[:])
			_, err = w.Write(rec)
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Write saves the live records of tables (those meta.Keep accepts), the
// class table and the detectors' class statistics of model (may be nil) to
// path atomically: Encode into a temporary file, synced and renamed. The
// tables and model must not change during the call (workers stopped).
func Write(path string, meta Meta, tables []*state.Table, model *detectors.ClassModel) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create checkpoint %q: %w", tmp, err)
	}
	defer os.Remove(tmp) // after a successful rename this is a no-op
	if err := Encode(f, meta, tables, model); err != nil {
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

// Encode writes a checkpoint (the format of the package doc, checksum
// included) of the live records of tables that meta.Keep accepts, the entity
// records of meta.EntityTables that meta.KeepEntity accepts, and the class
// table and class statistics of model (may be nil: empty sections) to w.
// meta.Slices, when set, must be model's layout's (MetaOf). The tables and
// model must not change during the call (workers stopped).
func Encode(out io.Writer, meta Meta, tables []*state.Table, model *detectors.ClassModel) error {
	if model != nil && len(meta.Slices) != 0 && len(meta.Slices) != len(model.Layout.Specs) {
		return fmt.Errorf("BUG: %d slices for a class model of %d detectors", len(meta.Slices), len(model.Layout.Specs))
	}
	var keep, keepEntity keepFunc
	if meta.Keep != nil {
		keep = func(key, alt uint64, _ []byte) bool { return meta.Keep(key, alt) }
	}
	if meta.KeepEntity != nil {
		keepEntity = func(_, _ uint64, rec []byte) bool { return meta.KeepEntity(rec) }
	}
	n := countRecords(tables, keep)
	h := crc32.New(crcTable)
	w := bufio.NewWriterSize(io.MultiWriter(out, h), 1<<20)

	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, formatVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, meta.LayoutVersion)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(meta.RecordSize))
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(meta.Slices)))
	hdr = binary.LittleEndian.AppendUint64(hdr, meta.StreamSeq)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(time.Now().UnixNano()))
	hdr = binary.LittleEndian.AppendUint64(hdr, n)
	for _, s := range meta.Slices {
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(s.Name)))
		hdr = append(hdr, s.Name...)
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(s.Size))
		hdr = binary.LittleEndian.AppendUint32(hdr, s.Version)
		hdr = binary.LittleEndian.AppendUint32(hdr, uint32(s.Offset))
	}
	w.Write(hdr)

	if err := writeRecords(w, tables, meta.RecordSize, keep); err != nil {
		return err
	}
	section := func(b []byte) {
		w.Write(binary.LittleEndian.AppendUint64(nil, uint64(len(b))))
		w.Write(b)
	}
	var snap []byte
	if model != nil {
		snap = model.Table.AppendSnapshot(nil)
	}
	section(snap)
	for i := range meta.Slices {
		snap = snap[:0]
		if model != nil && model.Stats(i) != nil {
			snap = model.Stats(i).AppendSnapshot(snap)
		}
		section(snap)
	}
	w.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(meta.Engines))))
	for _, e := range meta.Engines {
		section(e)
	}
	w.Write(binary.LittleEndian.AppendUint32(nil, uint32(meta.EntityRecordSize)))
	w.Write(binary.LittleEndian.AppendUint64(nil, countRecords(meta.EntityTables, keepEntity)))
	if err := writeRecords(w, meta.EntityTables, meta.EntityRecordSize, keepEntity); err != nil {
		return fmt.Errorf("entities: %w", err)
	}
	w.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(meta.EntityEngines))))
	for _, e := range meta.EntityEngines {
		section(e)
	}
	section(meta.Calibration)
	section(meta.Incidents)
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := out.Write(binary.LittleEndian.AppendUint32(nil, h.Sum32())); err != nil {
		return err
	}
	return nil
}

// Read restores a checkpoint: it calls put for every record, laid out as
// want says (MetaOf the current layout; see the package doc for how records
// of another layout are mapped), then loads the class table and the
// detectors' class statistics into model (may be nil). Records are handed
// to put before the checksum at the end is verified: on any error the
// caller must discard what put received and cold-start. rec is valid only
// during the call. Read is Load without cancellation, presizing or progress.
func Read(path string, want Meta, put func(key, alt uint64, lastSeen int64, rec []byte), model *detectors.ClassModel) (Meta, error) {
	return Load(context.Background(), path, want, Target{Put: put}, model)
}

// Target receives the records of a checkpoint from Load.
type Target struct {
	// Reserve, when set, is called once, before the first Put, with the
	// number of records the file holds: where to size the state tables
	// (state.Table.Reserve), so that the restore does not rebuild them.
	Reserve func(records uint64)
	// Put receives every record; rec is valid only during the call.
	Put func(key, alt uint64, lastSeen int64, rec []byte)
	// PutEntity, when set, receives every entity record (format version 4)
	// as it was written; rec is valid only during the call.
	PutEntity func(key, alt uint64, lastSeen int64, rec []byte)
	// Progress, when set, is called after every ProgressEvery records with
	// the records read so far and the file's record count.
	Progress func(done, total uint64)
}

// ProgressEvery is how many records Load reads between calls of
// Target.Progress (and between checks of its context, every 1/16 of it).
const ProgressEvery = 1 << 18

// Load is Read with a context, which it checks every few thousand records
// (a restore of millions of devices takes seconds: a cancelled start, such
// as a SIGTERM, must not wait for it), and a Target that may presize the
// tables and report progress. On any error, ctx's included, the caller must
// discard what Put received.
func Load(ctx context.Context, path string, want Meta, to Target, model *detectors.ClassModel) (Meta, error) {
	f, err := os.Open(path)
	if err != nil {
		return Meta{}, fmt.Errorf("cannot open checkpoint %q: %w", path, err)
	}
	defer f.Close()
	return Decode(ctx, f, path, want, to, model)
}

// Decode is Load from a reader: path names the checkpoint in errors (a file,
// or an object of the Object Store). It reads in to its end: data after the
// checksum is an error.
func Decode(ctx context.Context, in io.Reader, path string, want Meta, to Target, model *detectors.ClassModel) (Meta, error) {
	var err error
	h := crc32.New(crcTable)
	r := bufio.NewReaderSize(in, 1<<20)
	body := io.TeeReader(r, h)
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(body, hdr); err != nil {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: header: %w", path, err)
	}
	if string(hdr[:8]) != magic {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: not an iotwatch checkpoint", path)
	}
	version := binary.LittleEndian.Uint32(hdr[8:])
	if version != formatVersion && version != formatNoIncidents && version != formatNoEntities && version != formatNoEngines {
		return Meta{}, fmt.Errorf("cannot read checkpoint %q: format version %d, this build reads %d to %d: %w",
			path, version, formatNoEngines, formatVersion, ErrIncompatible)
	}
	m := Meta{
		LayoutVersion: binary.LittleEndian.Uint32(hdr[12:]),
		RecordSize:    int(binary.LittleEndian.Uint32(hdr[16:])),
		StreamSeq:     binary.LittleEndian.Uint64(hdr[24:]),
		Created:       time.Unix(0, int64(binary.LittleEndian.Uint64(hdr[32:]))),
		Records:       binary.LittleEndian.Uint64(hdr[40:]),
	}
	if n := binary.LittleEndian.Uint32(hdr[20:]); n > maxSlices {
		return m, fmt.Errorf("cannot read checkpoint %q: %d slices is corrupt", path, n)
	} else if m.Slices, err = readSlices(body, int(n), m.RecordSize); err != nil {
		return m, fmt.Errorf("cannot read checkpoint %q: slice table: %w", path, err)
	}
	same := m.LayoutVersion == want.LayoutVersion && m.RecordSize == want.RecordSize && slices.Equal(m.Slices, want.Slices)
	if !same && (len(m.Slices) == 0 || len(want.Slices) == 0) {
		return m, fmt.Errorf("cannot read checkpoint %q: record layout %08x of %d bytes, this build uses %08x of %d bytes: %w",
			path, m.LayoutVersion, m.RecordSize, want.LayoutVersion, want.RecordSize, ErrIncompatible)
	}
	// from[i] is the offset in the file's records of want's slice i, -1 when
	// it has none to restore.
	from := make([]int, len(want.Slices))
	for i, s := range want.Slices {
		from[i] = -1
		for _, fs := range m.Slices {
			if fs.Name == s.Name && fs.Size == s.Size && fs.Version == s.Version {
				from[i] = fs.Offset
			}
		}
		if from[i] < 0 {
			m.Cold = append(m.Cold, s.Name)
		}
	}
	buf := make([]byte, recordHeader+m.RecordSize)
	out := make([]byte, want.RecordSize)
	// The file's header ends where its first slice starts (an older build's
	// header may be shorter: its missing fields read as zeros).
	hdrBytes := min(worker.HeaderSize, m.RecordSize, want.RecordSize)
	for _, s := range m.Slices {
		hdrBytes = min(hdrBytes, s.Offset)
	}
	if to.Reserve != nil {
		to.Reserve(m.Records)
	}
	for i := uint64(0); i < m.Records; i++ {
		if i%(ProgressEvery/16) == 0 && i > 0 {
			if err := ctx.Err(); err != nil {
				return m, fmt.Errorf("cannot read checkpoint %q: stopped after %d of %d records: %w", path, i, m.Records, err)
			}
			if to.Progress != nil && i%ProgressEvery == 0 {
				to.Progress(i, m.Records)
			}
		}
		if _, err := io.ReadFull(body, buf); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: record %d of %d: %w", path, i, m.Records, err)
		}
		rec := buf[recordHeader:]
		if !same {
			clear(out)
			copy(out[:hdrBytes], rec[:hdrBytes]) // the stream position learned up to
			binary.LittleEndian.PutUint32(out, want.LayoutVersion)
			for j, s := range want.Slices {
				if from[j] >= 0 {
					copy(out[s.Offset:s.Offset+s.Size], rec[from[j]:from[j]+s.Size])
				}
			}
			rec = out
		}
		to.Put(binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:]), int64(binary.LittleEndian.Uint64(buf[16:])), rec)
	}
	table, err := readSection(body, "class table")
	if err != nil {
		return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
	}
	stats := make([][]byte, len(m.Slices))
	for i, s := range m.Slices {
		if stats[i], err = readSection(body, "class statistics of "+s.Name); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
	}
	if version >= formatNoEntities {
		var nb [4]byte
		if _, err := io.ReadFull(body, nb[:]); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: decision engines: %w", path, err)
		}
		n := binary.LittleEndian.Uint32(nb[:])
		if n > maxEngines {
			return m, fmt.Errorf("cannot read checkpoint %q: %d decision engines is corrupt", path, n)
		}
		m.Engines = make([][]byte, n)
		for i := range m.Engines {
			if m.Engines[i], err = readSection(body, fmt.Sprintf("decision engine %d", i)); err != nil {
				return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
			}
		}
	}
	if version >= formatNoIncidents {
		if err := loadEntities(ctx, body, &m, to); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
		if m.Calibration, err = readSection(body, "calibration"); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
		if len(m.Calibration) == 0 {
			m.Calibration = nil
		}
	}
	if version >= formatVersion {
		if m.Incidents, err = readSection(body, "incidents"); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
		if len(m.Incidents) == 0 {
			m.Incidents = nil
		}
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
	if model == nil {
		return m, nil
	}
	if len(table) > 0 {
		if err := model.Table.LoadSnapshot(table); err != nil {
			return m, fmt.Errorf("cannot read checkpoint %q: %w", path, err)
		}
	}
	for i, s := range model.Layout.Specs {
		st := model.Stats(i)
		if st == nil {
			continue
		}
		j := slices.IndexFunc(m.Slices, func(fs Slice) bool { return fs.Name == s.Name })
		if j < 0 || len(stats[j]) == 0 || st.LoadSnapshot(stats[j]) != nil {
			if !slices.Contains(m.Cold, s.Name) {
				m.Cold = append(m.Cold, s.Name)
			}
		}
	}
	return m, nil
}

// readSlices reads a slice table of n slices of records of recordSize bytes.
func readSlices(r io.Reader, n, recordSize int) ([]Slice, error) {
	var out []Slice
	var b [4]byte
	for i := range n {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, err
		}
		l := binary.LittleEndian.Uint32(b[:])
		if l > maxName {
			return nil, fmt.Errorf("slice %d: a name of %d bytes is corrupt", i, l)
		}
		rest := make([]byte, l+12)
		if _, err := io.ReadFull(r, rest); err != nil {
			return nil, err
		}
		s := Slice{Name: string(rest[:l]), Size: int(binary.LittleEndian.Uint32(rest[l:])),
			Version: binary.LittleEndian.Uint32(rest[l+4:]), Offset: int(binary.LittleEndian.Uint32(rest[l+8:]))}
		if s.Offset < 0 || s.Size < 0 || s.Offset+s.Size > recordSize {
			return nil, fmt.Errorf("slice %q: %d bytes at %d do not fit a record of %d", s.Name, s.Size, s.Offset, recordSize)
		}
		out = append(out, s)
	}
	return out, nil
}

// readSection reads a length-prefixed section.
func readSection(r io.Reader, what string) ([]byte, error) {
	var lb [8]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, fmt.Errorf("%s length: %w", what, err)
	}
	n := binary.LittleEndian.Uint64(lb[:])
	if n > 1<<32 {
		return nil, fmt.Errorf("%s of %d bytes is corrupt", what, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// loadEntities reads the entities' sections into m and to.PutEntity.
func loadEntities(ctx context.Context, body io.Reader, m *Meta, to Target) error {
	var hb [12]byte
	if _, err := io.ReadFull(body, hb[:]); err != nil {
		return fmt.Errorf("entities: %w", err)
	}
	size := int(binary.LittleEndian.Uint32(hb[:]))
	m.EntityRecordSize, m.Entities = size, binary.LittleEndian.Uint64(hb[4:])
	if size > maxEntityRecord || (size == 0 && m.Entities > 0) {
		return fmt.Errorf("entity records of %d bytes is corrupt", size)
	}
	buf := make([]byte, recordHeader+size)
	for i := uint64(0); i < m.Entities; i++ {
		if i%(ProgressEvery/16) == 0 && i > 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("stopped after %d of %d entity records: %w", i, m.Entities, err)
			}
		}
		if _, err := io.ReadFull(body, buf); err != nil {
			return fmt.Errorf("entity record %d of %d: %w", i, m.Entities, err)
		}
		if to.PutEntity != nil {
			to.PutEntity(binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:]), int64(binary.LittleEndian.Uint64(buf[16:])), buf[recordHeader:])
		}
	}
	var nb [4]byte
	if _, err := io.ReadFull(body, nb[:]); err != nil {
		return fmt.Errorf("entity decision engines: %w", err)
	}
	n := binary.LittleEndian.Uint32(nb[:])
	if n > maxEngines {
		return fmt.Errorf("%d entity decision engines is corrupt", n)
	}
	m.EntityEngines = make([][]byte, n)
	for i := range m.EntityEngines {
		var err error
		if m.EntityEngines[i], err = readSection(body, fmt.Sprintf("entity decision engine %d", i)); err != nil {
			return err
		}
	}
	return nil
}
