package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/schemas"
)

const recSize = 24

var t0 = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()

func fixture(t *testing.T) ([]*state.Table, *detectors.ClassModel, map[uint64][]byte) {
	t.Helper()
	want := map[uint64][]byte{}
	var tables []*state.Table
	for w := range 2 {
		tb, err := state.NewTable(state.Config{RecordSize: recSize, IdleTTL: 24 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 500 {
			key := uint64(w*1000 + i + 1)
			rec, _ := tb.Record(key, key*7, t0+int64(i)*int64(time.Second))
			copy(rec, "device-"+strconv.Itoa(int(key)))
			want[key] = append([]byte(nil), rec...)
		}
		tables = append(tables, tb)
	}
	fleet := newModel()
	var ev schemas.Event
	for i := range 50 {
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte("m-"+strconv.Itoa(i)))
		ev.SetClass([]byte("meter"))
		ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
		ev.Time = t0
		fleet.Learn(&ev, nil)
	}
	return tables, fleet, want
}

// newModel returns an empty class model with no detectors: records of these
// tests are opaque bytes.
func newModel() *detectors.ClassModel {
	return detectors.NewClassModel(detectors.NewLayout(nil), detectors.NewClassTable(1024, 1024))
}

func TestRoundTrip(t *testing.T) {
	tables, fleet, want := fixture(t)
	path := filepath.Join(t.TempDir(), "state.ckpt")
	meta := Meta{LayoutVersion: 0xabcd, RecordSize: recSize, StreamSeq: 4242}
	if err := Write(path, meta, tables, fleet); err != nil {
		t.Fatal(err)
	}
	got := map[uint64][]byte{}
	fleet2 := newModel()
	m, err := Read(path, meta, func(key, alt uint64, lastSeen int64, rec []byte) {
		if alt != key*7 || lastSeen < t0 {
			t.Errorf("record %d: alt %d, last seen %d", key, alt, lastSeen)
		}
		got[key] = append([]byte(nil), rec...)
	}, fleet2)
	if err != nil {
		t.Fatal(err)
	}
	if m.StreamSeq != 4242 || m.Records != 1000 || len(got) != len(want) {
		t.Fatalf("meta %+v, %d records restored, want 1000", m, len(got))
	}
	for k, v := range want {
		if !bytes.Equal(got[k], v) {
			t.Fatalf("record %d = %q, want %q", k, got[k], v)
		}
	}
	cls := schemas.Hash2([]byte("acme"), []byte("meter"))
	if a, b := fleet.Table.ClassDevices(cls), fleet2.Table.ClassDevices(cls); a != b || a < 40 {
		t.Errorf("class devices %v after restore, %v before", b, a)
	}
}

func TestRejects(t *testing.T) {
	tables, fleet, _ := fixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.ckpt")
	meta := Meta{LayoutVersion: 7, RecordSize: recSize}
	if err := Write(path, meta, tables, fleet); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	f := func(name string, data []byte, want Meta, wantErr string) {
		t.Helper()
		p := filepath.Join(dir, name)
		os.WriteFile(p, data, 0o600)
		_, err := Read(p, want, func(uint64, uint64, int64, []byte) {}, newModel())
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, wantErr)
		}
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	f("flipped", flipped, meta, "corrupt")
	f("truncated", good[:len(good)-100], meta, "cannot read checkpoint")
	f("garbage", []byte("hello, world, this is not a checkpoint at all........"), meta, "not an iotwatch checkpoint")
	f("other layout", good, Meta{LayoutVersion: 8, RecordSize: recSize}, "record layout")
	_, err := Read(path, Meta{LayoutVersion: 8, RecordSize: recSize}, func(uint64, uint64, int64, []byte) {}, nil)
	if !errors.Is(err, ErrIncompatible) {
		t.Errorf("other layout: %v is not ErrIncompatible", err)
	}
	f("trailing", append(bytes.Clone(good), 0), meta, "after the checksum")
	// Format version 1 (before the slice table, with every detector's class
	// statistics in the class table's snapshot) is refused, not guessed at.
	v1 := bytes.Clone(good)
	v1[8] = 1
	f("format 1", v1, meta, "format version 1, this build reads 2 to 5")
	if _, err := Read(filepath.Join(dir, "format 1"), meta, func(uint64, uint64, int64, []byte) {}, nil); !errors.Is(err, ErrIncompatible) {
		t.Errorf("format 1: %v is not ErrIncompatible", err)
	}
}

// TestEngines: the decision engines' snapshots and the calibration travel
// with the records, the engines in worker order; a file of format version 3
// (before the calibration did) still loads, without a calibration, and one
// of version 2 (before the engines did) with no engines; a corrupt engine
// count is refused.
func TestEngines(t *testing.T) {
	tables, fleet, want := fixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.ckpt")
	meta := Meta{LayoutVersion: 7, RecordSize: recSize, StreamSeq: 99,
		Engines: [][]byte{[]byte("engine zero"), nil, []byte("engine two")}, Calibration: []byte("calibration"),
		Incidents: []byte("open incidents")}
	if err := Write(path, meta, tables, fleet); err != nil {
		t.Fatal(err)
	}
	m, err := Read(path, meta, func(uint64, uint64, int64, []byte) {}, newModel())
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Engines) != 3 || string(m.Engines[0]) != "engine zero" || len(m.Engines[1]) != 0 || string(m.Engines[2]) != "engine two" {
		t.Errorf("engines read back: %q", m.Engines)
	}
	if string(m.Calibration) != "calibration" || string(m.Incidents) != "open incidents" {
		t.Errorf("calibration read back: %q, incidents %q", m.Calibration, m.Incidents)
	}
	full, _ := os.ReadFile(path)
	// Format 4: the same file without the incidents' section.
	body4 := bytes.Clone(full[:len(full)-8-len("open incidents")-4])
	binary.LittleEndian.PutUint32(body4[8:], 4)
	p4 := filepath.Join(dir, "v4.ckpt")
	os.WriteFile(p4, binary.LittleEndian.AppendUint32(body4, crc32.Checksum(body4, crc32.MakeTable(crc32.Castagnoli))), 0o600)
	if m, err := Read(p4, meta, func(uint64, uint64, int64, []byte) {}, newModel()); err != nil || m.Incidents != nil || string(m.Calibration) != "calibration" {
		t.Errorf("a format 4 checkpoint: incidents %q, calibration %q, err %v; want none, the calibration", m.Incidents, m.Calibration, err)
	}
	// Format 3: the same file without the calibration section.
	body3 := bytes.Clone(full[:len(full)-8-len("open incidents")-8-len("calibration")-16-4]) // without the (empty) entities' sections, the calibration, the incidents and the checksum
	binary.LittleEndian.PutUint32(body3[8:], 3)
	v3file := binary.LittleEndian.AppendUint32(body3, crc32.Checksum(body3, crc32.MakeTable(crc32.Castagnoli)))
	p3 := filepath.Join(dir, "v3.ckpt")
	os.WriteFile(p3, v3file, 0o600)
	if m, err := Read(p3, meta, func(uint64, uint64, int64, []byte) {}, newModel()); err != nil || m.Calibration != nil || len(m.Engines) != 3 {
		t.Errorf("a format 3 checkpoint: calibration %q, %d engines, err %v; want none, 3", m.Calibration, len(m.Engines), err)
	}

	// Format 2: the same file without the engines' section.
	noEngines := meta
	noEngines.Engines, noEngines.Calibration, noEngines.Incidents = nil, nil, nil
	if err := Write(path, noEngines, tables, fleet); err != nil {
		t.Fatal(err)
	}
	v5, _ := os.ReadFile(path)
	if m, err := Read(path, noEngines, func(uint64, uint64, int64, []byte) {}, nil); err != nil || m.Engines == nil || len(m.Engines) != 0 {
		t.Errorf("a format 5 file without engines: engines %q (nil: %v), err %v; want an empty, non-nil list", m.Engines, m.Engines == nil, err)
	}
	// Format 3: the same without the (empty) entities' sections, 16 bytes,
	// and the calibration's and the incidents' empty sections, 8 each.
	b3 := bytes.Clone(v5[:len(v5)-4-8-8-16])
	binary.LittleEndian.PutUint32(b3[8:], 3)
	v3 := binary.LittleEndian.AppendUint32(b3, crc32.Checksum(b3, crc32.MakeTable(crc32.Castagnoli)))
	p3 = filepath.Join(dir, "v3-no-engines.ckpt")
	os.WriteFile(p3, v3, 0o600)
	if m, err := Read(p3, noEngines, func(uint64, uint64, int64, []byte) {}, nil); err != nil || m.Engines == nil || m.Entities != 0 || m.EntityEngines != nil {
		t.Errorf("a format 3 file: engines %q, %d entities, entity engines %q, err %v", m.Engines, m.Entities, m.EntityEngines, err)
	}
	body := bytes.Clone(v3[:len(v3)-4-4]) // without the engine count and the checksum
	binary.LittleEndian.PutUint32(body[8:], 2)
	v2 := binary.LittleEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	p2 := filepath.Join(dir, "v2.ckpt")
	os.WriteFile(p2, v2, 0o600)
	got := map[uint64][]byte{}
	m, err = Read(p2, noEngines, func(key, _ uint64, _ int64, rec []byte) { got[key] = bytes.Clone(rec) }, newModel())
	if err != nil {
		t.Fatalf("a format 2 checkpoint: %v", err)
	}
	if m.Engines != nil || len(got) != len(want) || m.StreamSeq != 99 {
		t.Errorf("format 2: engines %q, %d records (want %d), stream seq %d", m.Engines, len(got), len(want), m.StreamSeq)
	}

	// A corrupt engine count (checksum made to match) is refused.
	bad := bytes.Clone(v3[:len(v3)-4])
	binary.LittleEndian.PutUint32(bad[len(bad)-4:], maxEngines+1) // the format 3 file ends with the engine count
	bad = binary.LittleEndian.AppendUint32(bad, crc32.Checksum(bad, crc32.MakeTable(crc32.Castagnoli)))
	pb := filepath.Join(dir, "bad.ckpt")
	os.WriteFile(pb, bad, 0o600)
	if _, err := Read(pb, noEngines, func(uint64, uint64, int64, []byte) {}, nil); err == nil || !strings.Contains(err.Error(), "decision engines is corrupt") {
		t.Errorf("engine count %d: %v", maxEngines+1, err)
	}
}

// TestEntities: the entity owners' records and decision engines travel in
// format 4, and reach Target.PutEntity as written.
func TestEntities(t *testing.T) {
	tables, fleet, _ := fixture(t)
	et, err := state.NewTable(state.Config{RecordSize: 40, IdleTTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{}
	for i := range 300 {
		key := uint64(i + 1)
		rec, _ := et.Record(key, ^key, t0)
		copy(rec, "entity-"+strconv.Itoa(i))
		want[key] = string(rec)
	}
	path := filepath.Join(t.TempDir(), "state.ckpt")
	meta := Meta{LayoutVersion: 7, RecordSize: recSize, EntityTables: []*state.Table{et}, EntityRecordSize: 40,
		EntityEngines: [][]byte{[]byte("owner zero")}}
	if err := Write(path, meta, tables, fleet); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]string{}
	m, err := Load(t.Context(), path, meta, Target{Put: func(uint64, uint64, int64, []byte) {},
		PutEntity: func(key, alt uint64, lastSeen int64, rec []byte) {
			if alt != ^key || lastSeen != t0 {
				t.Errorf("entity %d: alt %x, last seen %d", key, alt, lastSeen)
			}
			got[key] = string(rec)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Entities != 300 || m.EntityRecordSize != 40 || len(got) != 300 || len(m.EntityEngines) != 1 || string(m.EntityEngines[0]) != "owner zero" {
		t.Fatalf("meta %+v, %d entities read", m, len(got))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("entity %d: %q, want %q", k, got[k], v)
		}
	}
}

// TestEncodeSubset: Encode with Keep writes only the records it accepts
// (a partition's), with their count in the header, and Decode reads them
// back from a stream; a stream cut short or followed by more data is
// refused.
func TestEncodeSubset(t *testing.T) {
	tables, _, want := fixture(t)
	meta := Meta{LayoutVersion: 0xabcd, RecordSize: recSize, StreamSeq: 99,
		Keep: func(key, alt uint64) bool { return alt%3 == 0 }}
	var buf bytes.Buffer
	if err := Encode(&buf, meta, tables, nil); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for key := range want {
		if key*7%3 == 0 {
			kept++
		}
	}
	got := map[uint64][]byte{}
	m, err := Decode(t.Context(), bytes.NewReader(buf.Bytes()), "subset", meta, Target{Put: func(key, alt uint64, _ int64, rec []byte) {
		got[key] = append([]byte(nil), rec...)
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Records != uint64(kept) || len(got) != kept || kept == 0 || kept == len(want) || m.StreamSeq != 99 {
		t.Fatalf("%d records in the header, %d decoded, want %d of %d, at 99 (got %d)", m.Records, len(got), kept, len(want), m.StreamSeq)
	}
	for key, rec := range got {
		if key*7%3 != 0 || !bytes.Equal(rec, want[key]) {
			t.Fatalf("record %d: not kept, or not its bytes", key)
		}
	}
	for _, c := range []struct {
		what string
		data []byte
		err  string
	}{
		{"cut short", buf.Bytes()[:buf.Len()-10], "unexpected EOF"},
		{"followed by data", append(bytes.Clone(buf.Bytes()), 0), "data after the checksum"},
	} {
		if _, err := Decode(t.Context(), bytes.NewReader(c.data), "subset", meta, Target{Put: func(uint64, uint64, int64, []byte) {}}, nil); err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), `"subset"`) {
			t.Errorf("%s: err = %v, want one naming the checkpoint and saying %q", c.what, err, c.err)
		}
	}
}
