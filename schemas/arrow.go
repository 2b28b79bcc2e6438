package schemas

import (
	"fmt"
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
type ScoredBatch struct {
	rb *array.RecordBuilder
	n  int

	time                                                           *array.TimestampBuilder
	timeMs                                                         *array.Int64Builder
	eventID, streamSeq, resource, bytesIn, bytesOut                *array.Uint64Builder
	tenant, device, idMethod, apiKey, class, firmware, sourceKind  *array.StringBuilder
	sourceID, clientIP, country, protocol, command, auth, verdict  *array.StringBuilder
	resourceIDs                                                    *array.StringBuilder
	asn, latency                                                   *array.Uint32Builder
	status                                                         *array.Uint16Builder
	score                                                          *array.Float32Builder
	detectors, reasons, scores, observed, expected, obsLbl, expLbl *array.ListBuilder
	detectorsV, reasonsV, obsLblV, expLblV                         *array.StringBuilder
	scoresV                                                        *array.Float32Builder
	observedV, expectedV                                           *array.Float64Builder

	strs    []*array.StringBuilder // every string builder, for NewRecord's reservations
	strData []int

	ipBuf [64]byte
}

// NewScoredBatch returns an empty batch that allocates from mem
// (memory.DefaultAllocator when nil). Release it when done.
func NewScoredBatch(mem memory.Allocator) *ScoredBatch {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	schema := ScoredArrowSchema()
	b := &ScoredBatch{rb: array.NewRecordBuilder(mem, schema)}
	field := func(name string) array.Builder {
		idx := schema.FieldIndices(name)
		if len(idx) != 1 {
			panic(fmt.Sprintf("BUG: scored schema has %d fields named %q", len(idx), name))
		}
		return b.rb.Field(idx[0])
	}
	str := func(name string) *array.StringBuilder { return field(name).(*array.StringBuilder) }
	u64 := func(name string) *array.Uint64Builder { return field(name).(*array.Uint64Builder) }
	list := func(name string) *array.ListBuilder { return field(name).(*array.ListBuilder) }

	b.time = field(ColTime).(*array.TimestampBuilder)
	b.timeMs = field(ColTimeMs).(*array.Int64Builder)
	b.eventID = u64(ColEventID)
	b.streamSeq = u64(ColStreamSeq)
	b.resource = u64(ColResource)
	b.bytesIn = u64(ColBytesIn)
	b.bytesOut = u64(ColBytesOut)
	b.tenant = str(ColTenant)
	b.device = str(ColDevice)
	b.idMethod = str(ColIDMethod)
	b.apiKey = str(ColAPIKey)
	b.class = str(ColClass)
	b.firmware = str(ColFirmware)
	b.sourceKind = str(ColSourceKind)
	b.sourceID = str(ColSourceID)
	b.clientIP = str(ColClientIP)
	b.country = str(ColCountry)
	b.protocol = str(ColProtocol)
	b.command = str(ColCommand)
	b.resourceIDs = str(ColResourceIDs)
	b.auth = str(ColAuth)
	b.verdict = str(ColVerdict)
	b.asn = field(ColASN).(*array.Uint32Builder)
	b.latency = field(ColLatencyUS).(*array.Uint32Builder)
	b.status = field(ColStatus).(*array.Uint16Builder)
	b.score = field(ColScore).(*array.Float32Builder)
	b.detectors = list(ColDetectors)
	b.reasons = list(ColReasons)
	b.scores = list(ColScores)
	b.observed = list(ColObserved)
	b.expected = list(ColExpected)
	b.obsLbl = list(ColObservedLabels)
	b.expLbl = list(ColExpectedLabels)
	b.detectorsV = b.detectors.ValueBuilder().(*array.StringBuilder)
	b.reasonsV = b.reasons.ValueBuilder().(*array.StringBuilder)
	b.obsLblV = b.obsLbl.ValueBuilder().(*array.StringBuilder)
	b.expLblV = b.expLbl.ValueBuilder().(*array.StringBuilder)
	b.scoresV = b.scores.ValueBuilder().(*array.Float32Builder)
	b.observedV = b.observed.ValueBuilder().(*array.Float64Builder)
	b.expectedV = b.expected.ValueBuilder().(*array.Float64Builder)
	b.strs = []*array.StringBuilder{b.tenant, b.device, b.idMethod, b.apiKey, b.class, b.firmware, b.sourceKind,
		b.sourceID, b.clientIP, b.country, b.protocol, b.command, b.resourceIDs, b.auth, b.verdict, b.detectorsV, b.reasonsV, b.obsLblV, b.expLblV}
	b.strData = make([]int, len(b.strs))
	return b
}

// Append adds one row for ev and its result s. It copies everything it needs, so
// ev may be reused as soon as Append returns. Apart from the builders' growth it
// does not allocate.
func (b *ScoredBatch) Append(ev *Event, s *Scored) {
	sec := ev.Time / 1e9
	ms := ev.Time / 1e6
	if ev.Time < 0 && ev.Time%1e9 != 0 { // floor, not truncation, before 1970
		sec--
	}
	if ev.Time < 0 && ev.Time%1e6 != 0 {
		ms--
	}
	b.time.Append(arrow.Timestamp(sec))
	b.timeMs.Append(ms)
	b.eventID.Append(ev.ID)
	b.streamSeq.Append(ev.Seq)
	b.tenant.BinaryBuilder.Append(ev.Tenant)
	b.device.BinaryBuilder.Append(ev.Device)
	b.idMethod.Append(ev.IDMethod.String())
	b.apiKey.BinaryBuilder.Append(ev.APIKey)
	b.class.BinaryBuilder.Append(ev.Class)
	b.firmware.BinaryBuilder.Append(ev.Firmware)
	b.sourceKind.Append(ev.Source.String())
	b.sourceID.BinaryBuilder.Append(ev.SourceID)
	if ev.ClientIP.IsValid() {
		b.clientIP.BinaryBuilder.Append(ev.ClientIP.AppendTo(b.ipBuf[:0]))
	} else {
		b.clientIP.BinaryBuilder.Append(nil)
	}
	if ev.Country.Known() {
		b.country.BinaryBuilder.Append(ev.Country[:])
	} else {
		b.country.BinaryBuilder.Append(nil)
	}
	b.asn.Append(ev.ASN)
	b.protocol.Append(ev.Protocol.String())
	b.command.BinaryBuilder.Append(ev.Command)
	b.resource.Append(ev.Resource)
	b.resourceIDs.BinaryBuilder.Append(ev.ResourceText)
	b.status.Append(ev.Status)
	b.auth.Append(ev.Auth.String())
	b.verdict.Append(ev.Verdict.String())
	b.bytesIn.Append(ev.BytesIn)
	b.bytesOut.Append(ev.BytesOut)
	b.latency.Append(ev.Latency)
	b.score.Append(s.Score)

	b.detectors.Append(true)
	b.reasons.Append(true)
	b.scores.Append(true)
	b.observed.Append(true)
	b.expected.Append(true)
	b.obsLbl.Append(true)
	b.expLbl.Append(true)
	for i := range s.Reasons() {
		f := &s.Findings[i]
		b.detectorsV.Append(f.Detector)
		b.reasonsV.Append(f.Reason)
		b.scoresV.Append(f.Score)
		b.observedV.Append(f.Observed)
		b.expectedV.Append(f.Expected)
		b.obsLblV.BinaryBuilder.Append(labelBytes(&f.ObservedLabel))
		b.expLblV.BinaryBuilder.Append(labelBytes(&f.ExpectedLabel))
	}
	b.n++
}

// Len returns the number of rows appended since the last NewRecord.
func (b *ScoredBatch) Len() int { return b.n }

// NewRecord returns the rows appended so far as a record batch (arrow.Record is
// its deprecated alias) and resets b for the next batch. The caller owns the
// record and must Release it.
func (b *ScoredBatch) NewRecord() arrow.RecordBatch {
	// Batches tend to have the same size: reserve what this one needed so that
	// the next one does not grow its buffers step by step.
	n, nf := b.n, b.detectorsV.Len()
	for i, sb := range b.strs {
		b.strData[i] = sb.DataLen()
	}
	rec := b.rb.NewRecordBatch()
	b.n = 0
	b.rb.Reserve(n)
	for _, vb := range []array.Builder{b.detectorsV, b.reasonsV, b.obsLblV, b.expLblV, b.scoresV, b.observedV, b.expectedV} {
		vb.Reserve(nf)
	}
	for i, sb := range b.strs {
		sb.ReserveData(b.strData[i])
	}
	return rec
}

// Release frees the builders' memory. b must not be used afterwards.
func (b *ScoredBatch) Release() { b.rb.Release() }

// labelBytes returns the label's text without copying.
func labelBytes(l *Label) []byte {
	for i, c := range l {
		if c == 0 {
			return l[:i]
		}
	}
	return l[:]
}
