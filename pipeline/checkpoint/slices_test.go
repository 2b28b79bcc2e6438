package checkpoint_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// teapot is a fourth detector, registered in this test binary only: 4 bytes
// of state (how many HTTP 418s the device answered) and class statistics (a
// count of events).
const teapot = "teapot"

type teapotDetector struct{}

func (teapotDetector) Observe(ev *schemas.Event, b []byte, _ detectors.Fleet) schemas.Finding {
	if ev.Status == 418 {
		b[0]++
	}
	return schemas.Finding{}
}

type teapotStats struct {
	*detectors.ClassTable
	events atomic.Uint64
}

func (s *teapotStats) Learn(*schemas.Event, []byte) { s.events.Add(1) }
func (s *teapotStats) AppendSnapshot(dst []byte) []byte {
	return fmt.Appendf(dst, "%d", s.events.Load())
}
func (s *teapotStats) LoadSnapshot(b []byte) error {
	var n uint64
	if _, err := fmt.Sscanf(string(b), "%d", &n); err != nil {
		return fmt.Errorf("cannot load teapot statistics: %w", err)
	}
	s.events.Store(n)
	return nil
}

func init() {
	detectors.Register(detectors.Spec{
		Name: teapot, Doc: "Counts HTTP 418 answers.", StateSize: 4, Version: 1, Reasons: []string{"teapot"},
		New:   func() detectors.Detector { return teapotDetector{} },
		Stats: func(c *detectors.ClassTable) detectors.ClassStats { return &teapotStats{ClassTable: c} },
	})
}

// stack is a worker over the named detectors, with its class model.
type stack struct {
	layout *worker.Layout
	model  *detectors.ClassModel
	w      *worker.Worker
}

func newStack(t *testing.T, names ...string) *stack {
	t.Helper()
	l, err := worker.NewLayout(names)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := decide.NewEngine(decide.DefaultConfig(), decide.NewLimiter(0))
	if err != nil {
		t.Fatal(err)
	}
	m := detectors.NewClassModel(l.Detectors, detectors.NewClassTable(1<<12, 1<<10))
	w, err := worker.New(l, worker.Config{IdleTTL: 24 * time.Hour}, m, eng)
	if err != nil {
		t.Fatal(err)
	}
	return &stack{layout: l, model: m, w: w}
}

// records returns the worker's records by device key.
func (s *stack) records() map[uint64][]byte {
	out := map[uint64][]byte{}
	s.w.Table().Range(func(key, _ uint64, _ int64, rec []byte) bool {
		out[key] = bytes.Clone(rec)
		return true
	})
	return out
}

// slice returns the named detector's slice of rec, nil when the layout has none.
func (s *stack) slice(rec []byte, name string) []byte {
	for i, sp := range s.layout.Detectors.Specs {
		if sp.Name == name {
			return s.layout.Detectors.State(rec[worker.HeaderSize:], i)
		}
	}
	return nil
}

// statsOf returns the snapshot of the named detector's class statistics.
func (s *stack) statsOf(name string) []byte {
	i := slices.IndexFunc(s.layout.Detectors.Specs, func(sp detectors.Spec) bool { return sp.Name == name })
	return s.model.Stats(i).AppendSnapshot(nil)
}

// TestAddAndRemoveDetector: a checkpoint written with command, geo and
// volume restores into a build with command, teapot and volume (geo
// removed, a fourth detector added, volume's slice moved): command's and
// volume's state bytes byte for byte, their class statistics and the class
// table as they were, every record's stream position, and teapot cold (zero
// state, empty statistics). Records of the new layout are its own: the
// worker learns on from them instead of clearing them.
func TestAddAndRemoveDetector(t *testing.T) {
	old := newStack(t, command.Name, geo.Name, volume.Name)
	cmds := []string{"POST /v1/devices/{id}/readings", "GET /v1/devices/{id}/config", "POST /v1/devices/{id}/unlock"}
	var ev schemas.Event
	seq := uint64(0)
	start := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	for i := range 3000 {
		ev.Reset()
		d := i % 60
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", d))
		ev.SetClass(fmt.Appendf(nil, "meter/m%d", d%3))
		ev.SetCommand([]byte(cmds[(i/60+d)%len(cmds)]))
		ev.Country, ev.ASN = schemas.Country{'D', 'E'}, 3320+uint32(d%2)
		ev.Status, ev.Auth, ev.BytesOut = 200, schemas.AuthOK, 100
		ev.Time = start + int64(i)*2e9
		seq++
		ev.Seq, ev.Line = seq, 1
		old.w.Learn(&ev)
	}
	path := filepath.Join(t.TempDir(), "state.ckpt")
	meta := checkpoint.MetaOf(old.layout)
	meta.StreamSeq = seq
	if err := checkpoint.Write(path, meta, []*state.Table{old.w.Table()}, old.model); err != nil {
		t.Fatal(err)
	}

	cur := newStack(t, command.Name, teapot, volume.Name)
	if cur.layout.Version == old.layout.Version {
		t.Fatalf("the two layouts have the same version %08x", cur.layout.Version)
	}
	m, err := checkpoint.Read(path, checkpoint.MetaOf(cur.layout), func(key, alt uint64, lastSeen int64, rec []byte) {
		r, _ := cur.w.Table().Record(key, alt, lastSeen)
		copy(r, rec)
	}, cur.model)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Cold, []string{teapot}) || m.StreamSeq != seq || m.Records != 60 {
		t.Errorf("restored %d records up to %d, cold %v; want 60 up to %d, cold [%s]", m.Records, m.StreamSeq, m.Cold, seq, teapot)
	}
	before, after := old.records(), cur.records()
	if len(after) != len(before) {
		t.Fatalf("%d records restored, want %d", len(after), len(before))
	}
	for key, rec := range before {
		got := after[key]
		if v := binary.LittleEndian.Uint32(got); v != cur.layout.Version {
			t.Fatalf("device %x: layout version %08x, want the current %08x", key, v, cur.layout.Version)
		}
		if !bytes.Equal(got[4:worker.HeaderSize], rec[4:worker.HeaderSize]) {
			t.Errorf("device %x: stream position %x, want %x", key, got[4:worker.HeaderSize], rec[4:worker.HeaderSize])
		}
		for _, name := range []string{command.Name, volume.Name} {
			if a, b := old.slice(rec, name), cur.slice(got, name); !bytes.Equal(a, b) || len(a) == 0 {
				t.Errorf("device %x: %s state %x, want %x", key, name, b, a)
			}
		}
		if tp := cur.slice(got, teapot); !bytes.Equal(tp, make([]byte, 4)) {
			t.Errorf("device %x: teapot state %x, want zeros (cold)", key, tp)
		}
	}
	for _, name := range []string{command.Name, volume.Name} {
		if a, b := old.statsOf(name), cur.statsOf(name); !bytes.Equal(a, b) {
			t.Errorf("%s class statistics: %d bytes restored differ from the %d saved", name, len(b), len(a))
		}
	}
	if a, b := old.model.Table.AppendSnapshot(nil), cur.model.Table.AppendSnapshot(nil); !bytes.Equal(a, b) {
		t.Errorf("class table differs after restore")
	}
	if s := string(cur.statsOf(teapot)); s != "0" {
		t.Errorf("teapot class statistics %q, want empty (0)", s)
	}

	// The restored records are the current layout's: the next event teaches
	// command on from its history (its count goes on) instead of a cold start.
	var key uint64
	for key = range before {
		break
	}
	count := func(rec []byte) uint32 {
		return binary.LittleEndian.Uint32(cur.slice(rec, command.Name)[8:])
	}
	n := count(after[key])
	for k := range 3000 {
		ev.Reset()
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", k))
		if ev.DeviceKey == key {
			break
		}
	}
	ev.SetClass([]byte("meter/m0"))
	ev.SetCommand([]byte(cmds[0]))
	ev.Status, ev.Time, ev.Seq, ev.Line = 418, start+7000e9, seq+1, 1
	cur.w.Learn(&ev)
	rec := cur.records()[key]
	if got := count(rec); got != n+1 || n == 0 {
		t.Errorf("command's event count after one more event: %d, want %d", got, n+1)
	}
	if tp := cur.slice(rec, teapot); tp[0] != 1 {
		t.Errorf("teapot state after a 418: %x, want 1 counted", tp)
	}
}

// TestShorterHeaderOfAnOlderBuild: a checkpoint whose records have the
// 16-byte header of an older build (no block expiry) restores with the
// stream position kept, the new header field zero (not the first slice's
// bytes) and every slice intact.
func TestShorterHeaderOfAnOlderBuild(t *testing.T) {
	const oldHeader = 16
	cur := newStack(t)
	if worker.HeaderSize <= oldHeader {
		t.Skipf("the header is %d bytes: no older, shorter one to test", worker.HeaderSize)
	}
	shift := worker.HeaderSize - oldHeader
	meta := checkpoint.MetaOf(cur.layout)
	meta.RecordSize -= shift
	for i := range meta.Slices {
		meta.Slices[i].Offset -= shift
	}
	old, err := state.NewTable(state.Config{RecordSize: meta.RecordSize, InitialDevices: 64})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64][]byte{}
	for k := range uint64(40) {
		rec, _ := old.Record(k+1, k+100, 1e18)
		for j := range rec {
			rec[j] = byte(j + 1) // no zero byte anywhere: a misplaced copy shows
		}
		binary.LittleEndian.PutUint64(rec[8:], 1000+k) // the stream position
		full := make([]byte, cur.layout.Size)
		copy(full[4:oldHeader], rec[4:oldHeader])
		copy(full[worker.HeaderSize:], rec[oldHeader:])
		want[k+1] = full
	}
	path := filepath.Join(t.TempDir(), "old.ckpt")
	if err := checkpoint.Write(path, meta, []*state.Table{old}, nil); err != nil {
		t.Fatal(err)
	}
	got := map[uint64][]byte{}
	if _, err := checkpoint.Read(path, checkpoint.MetaOf(cur.layout), func(key, _ uint64, _ int64, rec []byte) {
		got[key] = append([]byte(nil), rec...)
	}, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records restored, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if !bytes.Equal(g[4:], w[4:]) {
			t.Fatalf("device %d: restored record\n%x\nwant\n%x", k, g, w)
		}
	}
}
