package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"
)

// arrowTestEvents returns events that together use every field of the Arrow
// event schema: a full HTTP event with arguments and an IPv4 client, an MQTT
// event with an IPv6 client and an IPv4-mapped one, and one with every
// optional field empty.
func arrowTestEvents() []*Event {
	full := new(Event)
	full.Seq, full.Line = 4711, 3
	full.Time = time.Date(2026, 12, 6, 22, 30, 0, 123456789, time.UTC).UnixNano()
	full.Source = SourceGateway
	full.SetText(&full.SourceID, []byte("kong-eu-1"))
	full.SetDevice([]byte("acme"), []byte("lock-000042"))
	full.IDMethod = IDAPIKey
	full.SetText(&full.APIKey, []byte("key-7f3a"))
	full.SetClass([]byte("smart_lock/acme-l2"))
	full.SetText(&full.Firmware, []byte("2.4.1"))
	full.ClientIP = netip.MustParseAddr("203.0.113.7")
	full.Country = Country{'D', 'E'}
	full.ASN = 3320
	full.Lat, full.Lon = 52.52, 13.405
	full.Protocol = ProtoHTTP
	full.SetRawCommand([]byte("POST"), []byte("/v1/thermostats/lock-000042/set?temp=90.5&mode=2"))
	full.SetArg([]byte("fan.speed"), -3.25)
	full.Status = 403
	full.Auth = AuthFailed
	full.Verdict = VerdictDenied
	full.BytesIn, full.BytesOut = 1<<40, 17
	full.Latency = 12500
	full.ID = EventID(full.Seq, full.Line)

	mqtt := new(Event)
	mqtt.Seq, mqtt.Line = 4712, 0
	mqtt.Time = time.Date(2026, 12, 6, 22, 31, 0, 0, time.UTC).UnixNano()
	mqtt.Source = SourceBroker
	mqtt.SetDevice(nil, []byte("sensor-9"))
	mqtt.SetClass(nil)
	mqtt.IDMethod = IDMQTTUsername
	mqtt.ClientIP = netip.MustParseAddr("2001:db8::42")
	mqtt.Protocol = ProtoMQTT
	mqtt.SetRawCommand([]byte("PUBLISH"), []byte("devices/sensor-9/telemetry"))
	mqtt.Auth = AuthOK
	mqtt.Verdict = VerdictUnavailable
	mqtt.ID = EventID(mqtt.Seq, mqtt.Line)

	mapped := new(Event)
	mapped.CopyFrom(mqtt)
	mapped.Line = 1
	mapped.ClientIP = netip.MustParseAddr("::ffff:198.51.100.1")
	mapped.ID = EventID(mapped.Seq, mapped.Line)

	empty := new(Event)
	empty.Seq, empty.Line = 1, 0
	empty.Time = MinEventTime
	empty.SetDevice(nil, []byte("d"))
	empty.CommandID = Hash(nil)
	empty.ClassKey = Hash2(nil, nil)
	empty.ID = EventID(empty.Seq, empty.Line)
	return []*Event{full, mqtt, mapped, empty}
}

// encodeArrow encodes evs as one IPC stream.
func encodeArrow(t testing.TB, evs []*Event) []byte {
	t.Helper()
	b := NewEventBatch(nil)
	defer b.Release()
	for _, ev := range evs {
		b.Append(ev)
	}
	data, err := b.AppendIPC(nil)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// exported returns ev's exported fields (everything but the arena), for comparison.
func exported(ev *Event) map[string]any {
	m := map[string]any{}
	v := reflect.ValueOf(ev).Elem()
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() {
			m[f.Name] = v.Field(i).Interface()
		}
	}
	return m
}

func TestEventArrowRoundTrip(t *testing.T) {
	want := arrowTestEvents()
	data := encodeArrow(t, want)
	r := NewEventReader(nil)
	defer r.Close()
	if err := r.Open(data); err != nil {
		t.Fatal(err)
	}
	var got Event
	for i, w := range want {
		if err := r.Next(&got); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		g, e := exported(&got), exported(w)
		for k := range e {
			if !reflect.DeepEqual(g[k], e[k]) {
				t.Errorf("event %d: field %s = %v, want %v", i, k, g[k], e[k])
			}
		}
	}
	if err := r.Next(&got); err != io.EOF {
		t.Fatalf("after the last event: %v, want io.EOF", err)
	}
	// The full event's arguments: two from the query string, one set.
	if n := want[0].NArgs; n != 3 {
		t.Fatalf("the test event has %d arguments, want 3", n)
	}
}

func TestEventArrowSchemaDocumented(t *testing.T) {
	// Every field is named in the doc comment's table, so the documentation
	// cannot fall behind the schema.
	b, err := os.ReadFile("eventarrow.go")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, f := range EventArrowSchema().Fields() {
		if !strings.Contains(src, "//\t"+f.Name+" ") && !strings.Contains(src, "//\t"+f.Name+",") && !strings.Contains(src, ", "+f.Name+" ") {
			t.Errorf("field %q is not documented in eventarrow.go's field table", f.Name)
		}
		if f.Nullable {
			t.Errorf("field %q is nullable", f.Name)
		}
	}
	if v, _ := metaValue(EventArrowSchema().Metadata(), ArrowMetaEventVersion); v != EventArrowVersion {
		t.Errorf("schema version %q, want %q", v, EventArrowVersion)
	}
}

// writeWithSchema writes a one-row batch of the event schema's fields with
// the given metadata, plus extra fields.
func writeWithSchema(t *testing.T, md map[string]string, extra ...arrow.Field) []byte {
	t.Helper()
	fields := append(append([]arrow.Field(nil), eventArrowFields...), extra...)
	meta := arrow.MetadataFrom(md)
	s := arrow.NewSchema(fields, &meta)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, s)
	defer rb.Release()
	// A valid row: reuse the encoder's logic by copying an encoded batch's columns.
	data := encodeArrow(t, arrowTestEvents()[:1])
	rd, err := ipc.NewReader(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	if !rd.Next() {
		t.Fatal("no record")
	}
	src := rd.RecordBatch()
	cols := make([]arrow.Array, len(fields))
	for i := range fields {
		if i < len(eventArrowFields) {
			cols[i] = src.Column(i)
			continue
		}
		b := array.NewBuilder(memory.DefaultAllocator, fields[i].Type)
		b.AppendEmptyValue()
		cols[i] = b.NewArray()
		b.Release()
	}
	rec := array.NewRecordBatch(s, cols, 1)
	defer rec.Release()
	var buf strings.Builder
	w := ipc.NewWriter(&buf, ipc.WithSchema(s))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return []byte(buf.String())
}

func TestEventArrowVersions(t *testing.T) {
	r := NewEventReader(nil)
	defer r.Close()
	var ev Event
	// A later minor version adds a field: read, the field ignored.
	newer := writeWithSchema(t, map[string]string{ArrowMetaSchema: ArrowSchemaEvent, ArrowMetaEventVersion: fmt.Sprintf("%d.7", EventArrowMajor)},
		arrow.Field{Name: "future_field", Type: arrow.PrimitiveTypes.Int64})
	if err := r.Open(newer); err != nil {
		t.Fatalf("minor version 7: %v", err)
	}
	if err := r.Next(&ev); err != nil || string(ev.Device) != "lock-000042" {
		t.Fatalf("minor version 7: %v, device %q", err, ev.Device)
	}
	for _, md := range []map[string]string{
		{ArrowMetaSchema: ArrowSchemaEvent, ArrowMetaEventVersion: fmt.Sprintf("%d.0", EventArrowMajor+1)},
		{ArrowMetaSchema: ArrowSchemaEvent},
		{ArrowMetaSchema: "scored_events", ArrowMetaEventVersion: EventArrowVersion},
	} {
		err := r.Open(writeWithSchema(t, md))
		if !errors.Is(err, ErrArrowVersion) {
			t.Errorf("metadata %v: %v, want ErrArrowVersion", md, err)
		} else if !strings.Contains(err.Error(), "cannot read Arrow event batch") {
			t.Errorf("metadata %v: unclear error %q", md, err)
		}
	}
}

func TestEventArrowRejectsRows(t *testing.T) {
	bad := arrowTestEvents()[0]
	bad.Device = []byte("lock\x1b[2J")
	ok := arrowTestEvents()[1]
	data := encodeArrow(t, []*Event{bad, ok})
	r := NewEventReader(nil)
	defer r.Close()
	if err := r.Open(data); err != nil {
		t.Fatal(err)
	}
	var ev Event
	var de *DecodeError
	if err := r.Next(&ev); !errors.As(err, &de) || de.Reason != DeadLetterBadField {
		t.Fatalf("a device with an escape sequence: %v, want a bad_field DecodeError", err)
	}
	if err := r.Next(&ev); err != nil || string(ev.Device) != "sensor-9" {
		t.Fatalf("the next row: %v, device %q", err, ev.Device)
	}
	if err := r.Open([]byte("not arrow")); err == nil {
		t.Fatal("garbage opened without an error")
	}
}

func TestEventArrowReadZeroAllocs(t *testing.T) {
	evs := arrowTestEvents()
	var many []*Event
	for range 64 {
		many = append(many, evs...)
	}
	data := encodeArrow(t, many)
	r := NewEventReader(nil)
	defer r.Close()
	if err := r.Open(data); err != nil {
		t.Fatal(err)
	}
	var ev Event
	if err := r.Next(&ev); err != nil { // grows the arena
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := r.Next(&ev); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Next allocates %v times per event in steady state", allocs)
	}
}

func FuzzEventArrowRead(f *testing.F) {
	evs := arrowTestEvents()
	f.Add(encodeArrow(f, evs))
	f.Add(encodeArrow(f, evs[:1]))
	f.Add(encodeArrow(f, evs[3:]))
	f.Add(encodeArrow(f, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewEventReader(nil)
		var ev Event
		if err := r.Open(data); err != nil {
			return
		}
		for range 1 << 16 {
			err := r.Next(&ev)
			if err == io.EOF {
				break
			}
			var de *DecodeError
			if err != nil && !errors.As(err, &de) {
				break // a malformed record: the reader is closed
			}
			if err == nil && ev.ID != EventID(ev.Seq, ev.Line) {
				t.Fatalf("event id %d is not EventID(%d, %d)", ev.ID, ev.Seq, ev.Line)
			}
		}
		r.Close()
	})
}

func TestEventArrowWriteZeroAllocs(t *testing.T) {
	evs := arrowTestEvents()
	b := NewEventBatch(nil)
	var out []byte
	write := func() {
		for _, ev := range evs {
			b.Append(ev)
		}
		var err error
		if out, err = b.AppendIPC(out[:0]); err != nil {
			t.Fatal(err)
		}
	}
	write()
	if allocs := testing.AllocsPerRun(100, write); allocs != 0 {
		t.Fatalf("Append and AppendIPC allocate %v times per batch in steady state", allocs)
	}
}

// BenchmarkEventArrow measures writing and reading a batch of 8 events (a
// log message of 100 lines spread over 16 partitions makes batches of about 6).
func BenchmarkEventArrow(b *testing.B) {
	evs := append(arrowTestEvents(), arrowTestEvents()...)
	b.Run("write", func(b *testing.B) {
		eb := NewEventBatch(nil)
		var out []byte
		b.ReportAllocs()
		for b.Loop() {
			for _, ev := range evs {
				eb.Append(ev)
			}
			out, _ = eb.AppendIPC(out[:0])
		}
		b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("read", func(b *testing.B) {
		data := encodeArrow(b, evs)
		r := NewEventReader(nil)
		var ev Event
		b.ReportAllocs()
		for b.Loop() {
			if err := r.Open(data); err != nil {
				b.Fatal(err)
			}
			for r.Next(&ev) == nil {
			}
		}
		b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
	})
}

// TestEventArrowRoundTripGeneric reads the events through arrow-go's reader
// (the path for streams other than EventBatch's own): the same record
// batch twice in one stream, as arrow-go writes it.
func TestEventArrowRoundTripGeneric(t *testing.T) {
	want := arrowTestEvents()
	rd, err := ipc.NewReader(strings.NewReader(string(encodeArrow(t, want))))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	if !rd.Next() {
		t.Fatal("no record batch in EventBatch's stream")
	}
	var buf strings.Builder
	w := ipc.NewWriter(&buf, ipc.WithSchema(rd.Schema()))
	for range 2 {
		if err := w.Write(rd.RecordBatch()); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	r := NewEventReader(nil)
	defer r.Close()
	if err := r.Open([]byte(buf.String())); err != nil {
		t.Fatal(err)
	}
	if r.fast {
		t.Fatal("a stream of two batches took the fast path")
	}
	var got Event
	for round := range 2 {
		for i, w := range want {
			if err := r.Next(&got); err != nil {
				t.Fatalf("round %d, event %d: %v", round, i, err)
			}
			g, e := exported(&got), exported(w)
			for k := range e {
				if !reflect.DeepEqual(g[k], e[k]) {
					t.Errorf("round %d, event %d: field %s = %v, want %v", round, i, k, g[k], e[k])
				}
			}
		}
	}
	if err := r.Next(&got); err != io.EOF {
		t.Fatalf("after the last event: %v, want io.EOF", err)
	}
}

// TestRecordBatchMetaBytes: the record batch metadata, its structs placed
// without a Prep each, is byte for byte what flatbuffers' Prep per struct
// writes (the form the generated Arrow code uses), for batches of one
// event and of several.
func TestRecordBatchMetaBytes(t *testing.T) {
	events := arrowTestEvents()
	for n := 1; n <= len(events); n++ {
		b := NewEventBatch(nil)
		for _, ev := range events[:n] {
			b.Append(ev)
		}
		if _, err := b.AppendIPC(nil); err != nil { // lays out the nodes and buffers
			t.Fatal(err)
		}
		got := bytes.Clone(b.recordBatchMeta(int64(n), 4096))
		fb := flatbuffers.NewBuilder(0)
		fb.StartVector(16, len(b.bufs), 8)
		for i := len(b.bufs) - 1; i >= 0; i-- {
			fb.Prep(8, 16)
			fb.PrependInt64(b.bufs[i].length)
			fb.PrependInt64(b.bufs[i].offset)
		}
		bufs := fb.EndVector(len(b.bufs))
		fb.StartVector(16, len(b.nodes), 8)
		for i := len(b.nodes) - 1; i >= 0; i-- {
			fb.Prep(8, 16)
			fb.PrependInt64(0)
			fb.PrependInt64(b.nodes[i].length)
		}
		nodes := fb.EndVector(len(b.nodes))
		fb.StartObject(5)
		fb.PrependInt64Slot(0, int64(n), 0)
		fb.PrependUOffsetTSlot(1, nodes, 0)
		fb.PrependUOffsetTSlot(2, bufs, 0)
		rb := fb.EndObject()
		fb.StartObject(5)
		fb.PrependInt64Slot(3, 4096, 0)
		fb.PrependUOffsetTSlot(2, rb, 0)
		fb.PrependInt16Slot(0, metadataV5, 0)
		fb.PrependByteSlot(1, headerRecordBatch, 0)
		fb.Finish(fb.EndObject())
		if want := fb.FinishedBytes(); !bytes.Equal(got, want) {
			t.Errorf("%d events: metadata\n%x\nwant\n%x", n, got, want)
		}
	}
}
