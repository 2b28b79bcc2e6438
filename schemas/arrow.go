package schemas

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Arrow form of scored events.
//
// The Arrow schema has one field per column of ScoredTable, with the same names,
// in the same order, none nullable. ClickHouse types map to Arrow types as:
//
//	DateTime        timestamp[s, tz=UTC]
//	Int64, UInt*    int64, uint*
//	Float32/64      float32/64
//	String          utf8
//	Array(T)        list<T>
//
// Batches are what the pipeline hands to the ClickHouse writer, and what a
// high-volume producer could ship as Arrow IPC.

var (
	scoredSchemaOnce sync.Once
	scoredSchema     *arrow.Schema
)

// ScoredArrowSchema returns the Arrow schema of scored events. The schema is
// shared and immutable.
func ScoredArrowSchema() *arrow.Schema {
	scoredSchemaOnce.Do(func() {
		fields := make([]arrow.Field, len(scoredTable.Columns))
		for i, c := range scoredTable.Columns {
			fields[i] = arrow.Field{Name: c.Name, Type: ArrowType(c.Type)}
		}
		md := arrow.NewMetadata([]string{"iotwatch.table", "iotwatch.schema_version"},
			[]string{TableScored, fmt.Sprint(SchemaVersion)})
		scoredSchema = arrow.NewSchema(fields, &md)
	})
	return scoredSchema
}

// ArrowType returns the Arrow type that holds values of ClickHouse type chType.
// It panics on a type the tables of this package do not use.
func ArrowType(chType string) arrow.DataType {
	switch chType {
	case "DateTime":
		return arrow.FixedWidthTypes.Timestamp_s
	case "String":
		return arrow.BinaryTypes.String
	case "Int64":
		return arrow.PrimitiveTypes.Int64
	case "UInt8":
		return arrow.PrimitiveTypes.Uint8
	case "UInt16":
		return arrow.PrimitiveTypes.Uint16
	case "UInt32":
		return arrow.PrimitiveTypes.Uint32
	case "UInt64":
		return arrow.PrimitiveTypes.Uint64
	case "Float32":
		return arrow.PrimitiveTypes.Float32
	case "Float64":
		return arrow.PrimitiveTypes.Float64
	case "Array(String)":
		return arrow.ListOfNonNullable(arrow.BinaryTypes.String)
	case "Array(Float32)":
		return arrow.ListOfNonNullable(arrow.PrimitiveTypes.Float32)
	case "Array(Float64)":
		return arrow.ListOfNonNullable(arrow.PrimitiveTypes.Float64)
	}
	panic(fmt.Sprintf("BUG: no Arrow type for ClickHouse type %q", chType))
}

// ScoredBatch accumulates scored events into an Arrow record batch with schema
// ScoredArrowSchema. It is not safe for concurrent use.
//
// It writes every column's Arrow buffers itself (values, utf8 and list
// offsets, little-endian, as the Arrow format lays them out) into plain Go
// slices: arrow-go's builders cost half of the scoring step (an interface
// call and a bounds check per value, and buffers zeroed on every growth and
// reservation; bench/RESULTS.md, "Scoring from Arrow batches"). NewRecord
// hands the buffers to the record and takes others, of the sizes the batch
// needed, from those of records already released, so a record outlives the
// batch's next rows and steady batches neither allocate nor zero memory.
type ScoredBatch struct {
	pool *recycler
	n    int
	cols []*scoredCol // in schema order

	time, timeMs, eventID, streamSeq, resource, bytesIn, bytesOut *scoredCol
	tenant, device, idMethod, apiKey, class, firmware, sourceKind *scoredCol
	sourceID, clientIP, country, protocol, command, auth, verdict *scoredCol
	resourceIDs, asn, latency, status, score, scorer              *scoredCol
	// The seven finding lists have one offsets buffer each, all equal.
	lists                                       []*scoredCol
	detectorsV, reasonsV, obsLblV, expLblV      *scoredCol
	scoresV, observedV, expectedV               *scoredCol
	detectors, reasons, scores, observed, expec *scoredCol

	ipBuf [64]byte
	// scorerName is every row's ColScorer (SetScorer).
	scorerName string
}

// SetScorer names the instance that scores the rows appended from now on
// (column ColScorer); empty until set.
func (b *ScoredBatch) SetScorer(name string) { b.scorerName = name }

// scoredCol is one column's buffers: for fixed-width types the values in
// vals; for utf8 the bytes in vals and the offsets (int32, starting with 0)
// in offs; for a list the offsets in offs and the values in child. The
// buffers hold nv and no bytes: appending writes into their capacity and
// moves the counts, so the per-value path stores no pointer (no GC write
// barrier) until a buffer has to grow.
type scoredCol struct {
	typ    arrow.DataType
	vals   []byte
	offs   []byte
	nv, no int
	child  *scoredCol
}

func newScoredCol(typ arrow.DataType) *scoredCol {
	c := &scoredCol{typ: typ}
	if l, ok := typ.(*arrow.ListType); ok {
		c.child = newScoredCol(l.Elem())
	}
	c.reset()
	return c
}

func (c *scoredCol) reset() {
	c.nv, c.no = 0, 0
	if c.typ.ID() == arrow.STRING || c.typ.ID() == arrow.LIST {
		c.end(0)
	}
	if c.child != nil {
		c.child.reset()
	}
}

// grown returns buf, holding n bytes, with room for extra more.
func grown(buf []byte, n, extra int) []byte {
	nb := make([]byte, max(2*len(buf), n+extra, 4096))
	copy(nb, buf[:n])
	return nb
}

// end appends the offset that closes the current value of a utf8 column
// (ending at n bytes) or a list (ending at n values).
func (c *scoredCol) end(n int) {
	if n > math.MaxInt32 {
		panic("BUG: scored batch column over 2 GiB: flush before")
	}
	if c.no+4 > len(c.offs) {
		c.offs = grown(c.offs, c.no, 4)
	}
	binary.LittleEndian.PutUint32(c.offs[c.no:], uint32(n))
	c.no += 4
}

func (c *scoredCol) bytes(v []byte) {
	if c.nv+len(v) > len(c.vals) {
		c.vals = grown(c.vals, c.nv, len(v))
	}
	c.nv += copy(c.vals[c.nv:], v)
	c.end(c.nv)
}

func (c *scoredCol) str(v string) {
	if c.nv+len(v) > len(c.vals) {
		c.vals = grown(c.vals, c.nv, len(v))
	}
	c.nv += copy(c.vals[c.nv:], v)
	c.end(c.nv)
}

// room makes room for n more value bytes and returns where they go.
func (c *scoredCol) room(n int) []byte {
	if c.nv+n > len(c.vals) {
		c.vals = grown(c.vals, c.nv, n)
	}
	p := c.vals[c.nv : c.nv+n]
	c.nv += n
	return p
}

func (c *scoredCol) u16(v uint16)    { binary.LittleEndian.PutUint16(c.room(2), v) }
func (c *scoredCol) u32(v uint32)    { binary.LittleEndian.PutUint32(c.room(4), v) }
func (c *scoredCol) u64(v uint64)    { binary.LittleEndian.PutUint64(c.room(8), v) }
func (c *scoredCol) f32(v float32)   { c.u32(math.Float32bits(v)) }
func (c *scoredCol) f64(v float64)   { c.u64(math.Float64bits(v)) }
func (c *scoredCol) lastOffset() int { return int(binary.LittleEndian.Uint32(c.offs[c.no-4:])) }

// NewScoredBatch returns an empty batch. The allocator is not used (the
// batch's records own Go slices that return to the batch when released);
// the parameter stays for the callers that pass one. Release it when done.
func NewScoredBatch(memory.Allocator) *ScoredBatch {
	schema := ScoredArrowSchema()
	b := &ScoredBatch{pool: &recycler{}, cols: make([]*scoredCol, schema.NumFields())}
	for i, f := range schema.Fields() {
		b.cols[i] = newScoredCol(f.Type)
	}
	col := func(name string) *scoredCol {
		idx := schema.FieldIndices(name)
		if len(idx) != 1 {
			panic(fmt.Sprintf("BUG: scored schema has %d fields named %q", len(idx), name))
		}
		return b.cols[idx[0]]
	}
	b.time, b.timeMs, b.eventID, b.streamSeq = col(ColTime), col(ColTimeMs), col(ColEventID), col(ColStreamSeq)
	b.resource, b.bytesIn, b.bytesOut = col(ColResource), col(ColBytesIn), col(ColBytesOut)
	b.tenant, b.device, b.idMethod, b.apiKey = col(ColTenant), col(ColDevice), col(ColIDMethod), col(ColAPIKey)
	b.class, b.firmware, b.sourceKind, b.sourceID = col(ColClass), col(ColFirmware), col(ColSourceKind), col(ColSourceID)
	b.clientIP, b.country, b.protocol, b.command = col(ColClientIP), col(ColCountry), col(ColProtocol), col(ColCommand)
	b.resourceIDs, b.auth, b.verdict = col(ColResourceIDs), col(ColAuth), col(ColVerdict)
	b.asn, b.latency, b.status, b.score = col(ColASN), col(ColLatencyUS), col(ColStatus), col(ColScore)
	b.scorer = col(ColScorer)
	b.detectors, b.reasons, b.scores = col(ColDetectors), col(ColReasons), col(ColScores)
	b.observed, b.expec = col(ColObserved), col(ColExpected)
	obsLbl, expLbl := col(ColObservedLabels), col(ColExpectedLabels)
	b.lists = []*scoredCol{b.detectors, b.reasons, b.scores, b.observed, b.expec, obsLbl, expLbl}
	b.detectorsV, b.reasonsV, b.scoresV = b.detectors.child, b.reasons.child, b.scores.child
	b.observedV, b.expectedV, b.obsLblV, b.expLblV = b.observed.child, b.expec.child, obsLbl.child, expLbl.child
	return b
}

// Append adds one row for ev and its result s. It copies everything it needs, so
// ev may be reused as soon as Append returns. Once the batch's buffers have
// grown to a batch's size it does not allocate.
func (b *ScoredBatch) Append(ev *Event, s *Scored) {
	sec := ev.Time / 1e9
	ms := ev.Time / 1e6
	if ev.Time < 0 && ev.Time%1e9 != 0 { // floor, not truncation, before 1970
		sec--
	}
	if ev.Time < 0 && ev.Time%1e6 != 0 {
		ms--
	}
	b.time.u64(uint64(sec))
	b.timeMs.u64(uint64(ms))
	b.eventID.u64(ev.ID)
	b.streamSeq.u64(ev.Seq)
	b.tenant.bytes(ev.Tenant)
	b.device.bytes(ev.Device)
	b.idMethod.str(ev.IDMethod.String())
	b.apiKey.bytes(ev.APIKey)
	b.class.bytes(ev.Class)
	b.firmware.bytes(ev.Firmware)
	b.sourceKind.str(ev.Source.String())
	b.sourceID.bytes(ev.SourceID)
	if ev.ClientIP.IsValid() {
		b.clientIP.bytes(ev.ClientIP.AppendTo(b.ipBuf[:0]))
	} else {
		b.clientIP.bytes(nil)
	}
	if ev.Country.Known() {
		b.country.bytes(ev.Country[:])
	} else {
		b.country.bytes(nil)
	}
	b.asn.u32(ev.ASN)
	b.protocol.str(ev.Protocol.String())
	b.command.bytes(ev.Command)
	b.resource.u64(ev.Resource)
	b.resourceIDs.bytes(ev.ResourceText)
	b.status.u16(ev.Status)
	b.auth.str(ev.Auth.String())
	b.verdict.str(ev.Verdict.String())
	b.bytesIn.u64(ev.BytesIn)
	b.bytesOut.u64(ev.BytesOut)
	b.latency.u32(ev.Latency)
	b.score.f32(s.Score)
	b.scorer.str(b.scorerName)

	for i := range s.Reasons() {
		f := &s.Findings[i]
		b.detectorsV.str(f.Detector)
		b.reasonsV.str(f.Reason)
		b.scoresV.f32(f.Score)
		b.observedV.f64(f.Observed)
		b.expectedV.f64(f.Expected)
		b.obsLblV.bytes(labelBytes(&f.ObservedLabel))
		b.expLblV.bytes(labelBytes(&f.ExpectedLabel))
	}
	nf := b.detectors.lastOffset() + s.N
	for _, l := range b.lists {
		l.end(nf)
	}
	b.n++
}

// Len returns the number of rows appended since the last NewRecord.
func (b *ScoredBatch) Len() int { return b.n }

// NewRecord returns the rows appended so far as a record batch (arrow.Record is
// its deprecated alias) and resets b for the next batch. The caller owns the
// record and must Release it: that returns its buffers to b for later
// batches. Releasing it from another goroutine is safe.
func (b *ScoredBatch) NewRecord() arrow.RecordBatch {
	schema := ScoredArrowSchema()
	arrs := make([]arrow.Array, len(b.cols))
	for i, c := range b.cols {
		data := b.arrayData(c, b.n)
		arrs[i] = array.MakeFromData(data)
		data.Release()
	}
	rec := array.NewRecordBatch(schema, arrs, int64(b.n))
	for _, a := range arrs {
		a.Release()
	}
	b.n = 0
	return rec
}

// arrayData returns c's n values as Arrow array data that owns c's buffers,
// gives c others from the pool and resets it. The caller releases the data.
func (b *ScoredBatch) arrayData(c *scoredCol, n int) arrow.ArrayData {
	var bufs []*memory.Buffer
	var children []arrow.ArrayData
	switch c.typ.ID() {
	case arrow.STRING:
		bufs = []*memory.Buffer{nil, b.handOver(&c.offs, c.no), b.handOver(&c.vals, c.nv)}
	case arrow.LIST:
		child := b.arrayData(c.child, c.lastOffset())
		defer child.Release()
		bufs = []*memory.Buffer{nil, b.handOver(&c.offs, c.no)}
		children = []arrow.ArrayData{child}
	default:
		bufs = []*memory.Buffer{nil, b.handOver(&c.vals, c.nv)}
	}
	data := array.NewData(c.typ, n, bufs, children, 0, 0)
	for _, buf := range bufs {
		if buf != nil {
			buf.Release()
		}
	}
	c.reset()
	return data
}

// handOver returns the first n bytes of *p as a buffer that goes back to the
// pool when released, and replaces *p with a pooled slice of at least n bytes.
func (b *ScoredBatch) handOver(p *[]byte, n int) *memory.Buffer {
	buf := memory.NewBufferWithAllocator((*p)[:n], b.pool)
	*p = b.pool.get(n)
	return buf
}

// recycler is the memory.Allocator of a ScoredBatch's records: Free keeps
// a released record's buffers (up to maxFree of them) for the batch's next
// ones. Arrow only calls Free on them.
type recycler struct {
	mu   sync.Mutex
	free [][]byte
}

// minBuf is the smallest buffer a recycler hands out: Arrow's 64-byte
// alignment and padding unit, and more than any fixed-width value.
const minBuf = 64

// maxFree bounds the buffers kept: those of about four records (52 each).
const maxFree = 256

// get returns a kept slice of at least n bytes (the smallest such), or a new one.
//
// Every slice it hands out holds at least minBuf bytes: arrow-go reads a
// fixed-width column's buffer through a pointer to its first value even when
// the column is empty, so a pooled slice of a few bytes (a uint8 column's)
// handed to a float64 column would make that pointer straddle the end of its
// allocation (checkptr, under -race, aborts on it).
func (r *recycler) get(n int) []byte {
	n = max(n, minBuf)
	r.mu.Lock()
	best := -1
	for i, f := range r.free {
		if cap(f) >= n && (best < 0 || cap(f) < cap(r.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		f := r.free[best]
		last := len(r.free) - 1
		r.free[best], r.free[last] = r.free[last], nil
		r.free = r.free[:last]
		r.mu.Unlock()
		return f[:cap(f)]
	}
	r.mu.Unlock()
	return make([]byte, n)
}

// Allocate returns a slice of size bytes (arrow-go does not call it for
// these buffers, which are never resized).
func (r *recycler) Allocate(size int) []byte { return r.get(size)[:size] }

// Reallocate returns b grown to size bytes, its contents kept.
func (r *recycler) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		return b[:size]
	}
	nb := r.Allocate(size)
	copy(nb, b)
	r.Free(b)
	return nb
}

// Free keeps b for a later batch.
func (r *recycler) Free(b []byte) {
	if cap(b) == 0 {
		return
	}
	r.mu.Lock()
	if len(r.free) < maxFree {
		r.free = append(r.free, b[:cap(b)])
	}
	r.mu.Unlock()
}

// Release frees the batch's buffers. b must not be used afterwards.
func (b *ScoredBatch) Release() { *b = ScoredBatch{} }

// labelBytes returns the label's text without copying.
func labelBytes(l *Label) []byte {
	for i, c := range l {
		if c == 0 {
			return l[:i]
		}
	}
	return l[:]
}
