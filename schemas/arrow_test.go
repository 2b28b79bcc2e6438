package schemas

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// testScoredEvent fills ev and s with a representative event with two findings.
func testScoredEvent(ev *Event, s *Scored, i int) {
	ev.Reset()
	ev.ID = 1000 + uint64(i)
	ev.Seq = 77
	ev.Time = time.Date(2026, 1, 5, 10, 0, 0, 250e6, time.UTC).UnixNano() + int64(i)*int64(time.Second)
	ev.Source = SourceGateway
	ev.SetText(&ev.SourceID, []byte("kong-eu-1"))
	ev.SetDevice([]byte("acme"), []byte("lock-000042"))
	ev.IDMethod = IDAPIKey
	ev.SetText(&ev.APIKey, []byte("key-7f3a"))
	ev.SetClass([]byte("smart_lock/acme-l2"))
	ev.SetText(&ev.Firmware, []byte("2.4.1"))
	ev.ClientIP = netip.MustParseAddr("203.0.113.7")
	ev.Country = Country{'D', 'E'}
	ev.ASN = 3320
	ev.Protocol = ProtoHTTP
	ev.SetCommand([]byte("POST /v1/devices/{id}/unlock"))
	ev.Resource = 0xfeed
	ev.Status = 200
	ev.Auth = AuthOK
	ev.Verdict = VerdictAllowed
	ev.BytesIn = 312
	ev.BytesOut = 1024
	ev.Latency = 12500

	*s = Scored{Score: 0.875}
	s.Add(Finding{Detector: "geo", Reason: "new_country", Score: 0.875,
		Observed: 1, Expected: 0, ObservedLabel: LabelString("DE"), ExpectedLabel: LabelString("FR")})
	s.Add(Finding{Detector: "volume", Reason: "rate_spike", Score: 0.5, Observed: 120, Expected: 12.5})
}

func TestScoredBatch(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	b := NewScoredBatch(mem)
	defer b.Release()
	var ev Event
	var s Scored
	testScoredEvent(&ev, &s, 0)
	b.Append(&ev, &s)
	// Second row: unknown IP and country, no findings, a time before 1970.
	testScoredEvent(&ev, &s, 1)
	ev.ClientIP = netip.Addr{}
	ev.Country = Country{}
	ev.Time = -1500 * int64(time.Millisecond)
	s = Scored{}
	b.Append(&ev, &s)
	if b.Len() != 2 {
		t.Fatalf("Len = %d, want 2", b.Len())
	}

	rec := b.NewRecord()
	defer rec.Release()
	if b.Len() != 0 {
		t.Errorf("Len after NewRecord = %d, want 0", b.Len())
	}
	if !rec.Schema().Equal(ScoredArrowSchema()) {
		t.Fatalf("record schema %v differs from ScoredArrowSchema", rec.Schema())
	}
	if rec.NumRows() != 2 || int(rec.NumCols()) != len(ScoredTable().Columns) {
		t.Fatalf("record is %dx%d, want 2x%d", rec.NumRows(), rec.NumCols(), len(ScoredTable().Columns))
	}

	col := func(name string) arrow.Array { return rec.Column(rec.Schema().FieldIndices(name)[0]) }
	str := func(name string, row int) string { return col(name).(*array.String).Value(row) }
	strList := func(name string, row int) []string {
		l := col(name).(*array.List)
		start, end := l.ValueOffsets(row)
		vals := l.ListValues().(*array.String)
		var out []string
		for i := start; i < end; i++ {
			out = append(out, vals.Value(int(i)))
		}
		return out
	}
	wantTime := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC).Unix()
	if got := int64(col(ColTime).(*array.Timestamp).Value(0)); got != wantTime {
		t.Errorf("time = %d, want %d", got, wantTime)
	}
	if got := col(ColTimeMs).(*array.Int64).Value(0); got != wantTime*1000+250 {
		t.Errorf("time_ms = %d, want %d", got, wantTime*1000+250)
	}
	if got := col(ColTime).(*array.Timestamp).Value(1); got != -2 {
		t.Errorf("time before 1970 = %d, want -2 (floor of -1.5 s)", got)
	}
	if got := col(ColTimeMs).(*array.Int64).Value(1); got != -1500 {
		t.Errorf("time_ms before 1970 = %d, want -1500", got)
	}
	checks := []struct{ name, got, want string }{
		{ColTenant, str(ColTenant, 0), "acme"},
		{ColDevice, str(ColDevice, 0), "lock-000042"},
		{ColIDMethod, str(ColIDMethod, 0), "api_key"},
		{ColAPIKey, str(ColAPIKey, 0), "key-7f3a"},
		{ColClass, str(ColClass, 0), "smart_lock/acme-l2"},
		{ColFirmware, str(ColFirmware, 0), "2.4.1"},
		{ColSourceKind, str(ColSourceKind, 0), "gateway"},
		{ColSourceID, str(ColSourceID, 0), "kong-eu-1"},
		{ColClientIP, str(ColClientIP, 0), "203.0.113.7"},
		{ColCountry, str(ColCountry, 0), "DE"},
		{ColProtocol, str(ColProtocol, 0), "http"},
		{ColCommand, str(ColCommand, 0), "POST /v1/devices/{id}/unlock"},
		{ColAuth, str(ColAuth, 0), "ok"},
		{ColVerdict, str(ColVerdict, 0), "allowed"},
		{"client_ip row 1", str(ColClientIP, 1), ""},
		{"country row 1", str(ColCountry, 1), ""},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if got := col(ColEventID).(*array.Uint64).Value(1); got != 1001 {
		t.Errorf("event_id = %d, want 1001", got)
	}
	nums := []struct {
		name      string
		got, want float64
	}{
		{ColStreamSeq, float64(col(ColStreamSeq).(*array.Uint64).Value(0)), 77},
		{ColASN, float64(col(ColASN).(*array.Uint32).Value(0)), 3320},
		{ColResource, float64(col(ColResource).(*array.Uint64).Value(0)), 0xfeed},
		{ColStatus, float64(col(ColStatus).(*array.Uint16).Value(0)), 200},
		{ColBytesIn, float64(col(ColBytesIn).(*array.Uint64).Value(0)), 312},
		{ColBytesOut, float64(col(ColBytesOut).(*array.Uint64).Value(0)), 1024},
		{ColLatencyUS, float64(col(ColLatencyUS).(*array.Uint32).Value(0)), 12500},
		{ColScore, float64(col(ColScore).(*array.Float32).Value(0)), 0.875},
	}
	for _, c := range nums {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}

	listChecks := []struct {
		name string
		want []string
	}{
		{ColDetectors, []string{"geo", "volume"}},
		{ColReasons, []string{"new_country", "rate_spike"}},
		{ColObservedLabels, []string{"DE", ""}},
		{ColExpectedLabels, []string{"FR", ""}},
	}
	for _, c := range listChecks {
		if got := strList(c.name, 0); !equalStrings(got, c.want) {
			t.Errorf("%s = %q, want %q", c.name, got, c.want)
		}
		if got := strList(c.name, 1); len(got) != 0 {
			t.Errorf("%s of a row without findings = %q, want empty", c.name, got)
		}
	}
	obs := col(ColObserved).(*array.List)
	if start, end := obs.ValueOffsets(0); end-start != 2 {
		t.Fatalf("observed has %d values, want 2", end-start)
	}
	if got := obs.ListValues().(*array.Float64).Float64Values(); got[0] != 1 || got[1] != 120 {
		t.Errorf("observed = %v, want [1 120]", got)
	}
	if got := col(ColExpected).(*array.List).ListValues().(*array.Float64).Float64Values(); got[1] != 12.5 {
		t.Errorf("expected = %v, want [0 12.5]", got)
	}
	if got := col(ColScores).(*array.List).ListValues().(*array.Float32).Float32Values(); got[0] != 0.875 || got[1] != 0.5 {
		t.Errorf("scores = %v, want [0.875 0.5]", got)
	}

	// The builder is reusable after NewRecord.
	testScoredEvent(&ev, &s, 2)
	b.Append(&ev, &s)
	rec2 := b.NewRecord()
	defer rec2.Release()
	if rec2.NumRows() != 1 || rec2.Column(rec2.Schema().FieldIndices(ColEventID)[0]).(*array.Uint64).Value(0) != 1002 {
		t.Errorf("second record has %d rows, want 1 with event 1002", rec2.NumRows())
	}
}

// TestScoredBatchRecordsOutliveTheBatch checks that a record keeps its rows
// while the batch fills and hands out later records, some of them on the
// buffers of records released meanwhile.
func TestScoredBatchRecordsOutliveTheBatch(t *testing.T) {
	b := NewScoredBatch(nil)
	defer b.Release()
	var ev Event
	var s Scored
	batch := func(first, rows int) arrow.RecordBatch {
		for i := range rows {
			testScoredEvent(&ev, &s, first+i)
			ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "dev-%d", first+i))
			s.N = (first + i) % 3 // 0 to 2 findings
			b.Append(&ev, &s)
		}
		return b.NewRecord()
	}
	check := func(rec arrow.RecordBatch, first, rows int) {
		t.Helper()
		if int(rec.NumRows()) != rows {
			t.Fatalf("record of %d has %d rows, want %d", first, rec.NumRows(), rows)
		}
		dev := rec.Column(rec.Schema().FieldIndices(ColDevice)[0]).(*array.String)
		ids := rec.Column(rec.Schema().FieldIndices(ColEventID)[0]).(*array.Uint64)
		reasons := rec.Column(rec.Schema().FieldIndices(ColReasons)[0]).(*array.List)
		for i := range rows {
			if got, want := dev.Value(i), fmt.Sprintf("dev-%d", first+i); got != want {
				t.Fatalf("record of %d, row %d: device %q, want %q", first, i, got, want)
			}
			if got := ids.Value(i); got != 1000+uint64(first+i) {
				t.Fatalf("record of %d, row %d: event id %d", first, i, got)
			}
			if lo, hi := reasons.ValueOffsets(i); int(hi-lo) != (first+i)%3 {
				t.Fatalf("record of %d, row %d: %d reasons, want %d", first, i, hi-lo, (first+i)%3)
			}
		}
	}
	r1 := batch(0, 500)
	r2 := batch(500, 700) // larger: buffers grow
	check(r1, 0, 500)
	r1.Release()
	r3 := batch(1200, 300) // on r1's buffers
	r4 := batch(1500, 900)
	check(r2, 500, 700)
	check(r3, 1200, 300)
	check(r4, 1500, 900)
	r2.Release()
	r3.Release()
	r5 := batch(2400, 600)
	check(r4, 1500, 900)
	check(r5, 2400, 600)
	r4.Release()
	r5.Release()
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// BenchmarkScoredBatchAppend measures appending one scored event with two
// findings; after the builders have grown, Append must not allocate.
func BenchmarkScoredBatchAppend(b *testing.B) {
	const batchRows = 10000
	sb := NewScoredBatch(memory.NewGoAllocator())
	defer sb.Release()
	var ev Event
	var s Scored
	testScoredEvent(&ev, &s, 0)
	// Warm up the builders to batch size so that the benchmark measures the steady state.
	for range batchRows {
		sb.Append(&ev, &s)
	}
	sb.NewRecord().Release()
	b.ReportAllocs()
	for b.Loop() {
		sb.Append(&ev, &s)
		if sb.Len() == batchRows {
			sb.NewRecord().Release()
		}
	}
}

// TestRecyclerNeverHandsOutTinyBuffers: a buffer of a few bytes given back
// (a one-row int32 column's) is never handed out again smaller than a value
// of any fixed-width type. arrow-go reads a fixed-width column through a
// pointer to its first value even when the column is empty: with -race
// (checkptr) an empty float64 column on a 4-byte buffer aborted the collector
// ("converted pointer straddles multiple allocations").
func TestRecyclerNeverHandsOutTinyBuffers(t *testing.T) {
	var r recycler
	r.Free(make([]byte, 4))
	r.Free(make([]byte, 1))
	for _, n := range []int{0, 1, 4, 8} {
		if b := r.get(n); cap(b) < 8 || len(b) < n {
			t.Errorf("get(%d) handed out a buffer of len %d, cap %d; want cap >= 8", n, len(b), cap(b))
		}
	}
}
