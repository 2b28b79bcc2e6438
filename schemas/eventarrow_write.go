package schemas

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	flatbuffers "github.com/google/flatbuffers/go"
)

// EventBatch accumulates events into the columns of EventArrowSchema and
// writes them as Arrow IPC stream bytes (the schema message, one record
// batch, the end-of-stream marker).
//
// It writes the IPC format itself rather than through arrow-go's builders
// and writer: those allocate every buffer of every column and serialize the
// schema again for every batch, which costs more than the events in the
// small batches of one log message per partition (bench/RESULTS.md, "Ingest
// stage"). The schema message is arrow-go's, serialized once; the record
// batch's metadata is a flatbuffer built here; the body is the columns'
// buffers, each padded to 8 bytes, without validity bitmaps (no field is
// nullable). Tests read what it writes with arrow-go's reader. In steady
// state it does not allocate. It is not safe for concurrent use.
type EventBatch struct {
	n    int
	cols [ecCount]colBuf
	// The arguments' child columns: names (utf8) and values (float64).
	argNames  colBuf
	argValues colBuf
	fb        *flatbuffers.Builder
	nodes     []fieldNode
	bufs      []bufferSpec
}

// colBuf is one column's buffers: fixed-width values in vals; or, for
// variable-size columns and lists, offsets (int32, little-endian, starting
// with 0) in offs and the bytes in vals.
type colBuf struct {
	vals []byte
	offs []byte
}

type fieldNode struct{ length int64 }
type bufferSpec struct{ offset, length int64 }

// NewEventBatch returns an empty batch. The allocator is not used (the
// batch writes plain Go slices); the parameter stays for symmetry with
// NewScoredBatch.
func NewEventBatch(memory.Allocator) *EventBatch {
	b := &EventBatch{fb: flatbuffers.NewBuilder(1024)}
	b.reset()
	return b
}

// varCols are the variable-size columns (utf8 and binary), and listCols the
// lists, by column index.
var varCols = [ecCount]bool{ecSourceID: true, ecTenant: true, ecDevice: true, ecAPIKey: true, ecClass: true, ecFirmware: true,
	ecClientIP: true, ecCommand: true, ecResourceText: true}

func (b *EventBatch) reset() {
	b.n = 0
	for i := range b.cols {
		b.cols[i].vals = b.cols[i].vals[:0]
		b.cols[i].offs = b.cols[i].offs[:0]
		if varCols[i] || i == ecArgNames || i == ecArgValues {
			b.cols[i].offs = binary.LittleEndian.AppendUint32(b.cols[i].offs, 0)
		}
	}
	b.argNames.vals = b.argNames.vals[:0]
	b.argNames.offs = binary.LittleEndian.AppendUint32(b.argNames.offs[:0], 0)
	b.argValues.vals = b.argValues.vals[:0]
}

func (c *colBuf) str(v []byte) {
	c.vals = append(c.vals, v...)
	c.offs = binary.LittleEndian.AppendUint32(c.offs, uint32(len(c.vals)))
}

func (c *colBuf) u8(v uint8)   { c.vals = append(c.vals, v) }
func (c *colBuf) u16(v uint16) { c.vals = binary.LittleEndian.AppendUint16(c.vals, v) }
func (c *colBuf) u32(v uint32) { c.vals = binary.LittleEndian.AppendUint32(c.vals, v) }
func (c *colBuf) u64(v uint64) { c.vals = binary.LittleEndian.AppendUint64(c.vals, v) }

// Append adds ev as one row. It copies what it needs: ev may be reused as soon
// as Append returns. Apart from the buffers' growth it does not allocate.
func (b *EventBatch) Append(ev *Event) {
	c := &b.cols
	c[ecSeq].u64(ev.Seq)
	c[ecLine].u32(ev.Line)
	c[ecTime].u64(uint64(ev.Time))
	c[ecSource].u8(uint8(ev.Source))
	c[ecSourceID].str(ev.SourceID)
	c[ecTenant].str(ev.Tenant)
	c[ecDevice].str(ev.Device)
	c[ecIDMethod].u8(uint8(ev.IDMethod))
	c[ecAPIKey].str(ev.APIKey)
	c[ecClass].str(ev.Class)
	c[ecFirmware].str(ev.Firmware)
	switch {
	case ev.ClientIP.Is4():
		a := ev.ClientIP.As4()
		c[ecClientIP].str(a[:])
	case ev.ClientIP.Is6():
		a := ev.ClientIP.As16()
		c[ecClientIP].str(a[:])
	default:
		c[ecClientIP].str(nil)
	}
	c[ecCountry].vals = append(c[ecCountry].vals, ev.Country[0], ev.Country[1])
	c[ecASN].u32(ev.ASN)
	c[ecLat].u32(math.Float32bits(ev.Lat))
	c[ecLon].u32(math.Float32bits(ev.Lon))
	c[ecProtocol].u8(uint8(ev.Protocol))
	c[ecCommand].str(ev.Command)
	c[ecResource].u64(ev.Resource)
	c[ecResourceText].str(ev.ResourceText)
	for _, a := range ev.ArgList() {
		b.argNames.str(a.Name)
		b.argValues.u64(math.Float64bits(a.Value))
	}
	nargs := uint32(len(b.argValues.vals) / 8)
	c[ecArgNames].offs = binary.LittleEndian.AppendUint32(c[ecArgNames].offs, nargs)
	c[ecArgValues].offs = binary.LittleEndian.AppendUint32(c[ecArgValues].offs, nargs)
	c[ecStatus].u16(ev.Status)
	c[ecAuth].u8(uint8(ev.Auth))
	c[ecVerdict].u8(uint8(ev.Verdict))
	c[ecBytesIn].u64(ev.BytesIn)
	c[ecBytesOut].u64(ev.BytesOut)
	c[ecLatency].u32(ev.Latency)
	b.n++
}

// Len returns the number of rows appended since the last AppendIPC.
func (b *EventBatch) Len() int { return b.n }

// AppendIPC appends the rows appended so far to dst as one Arrow IPC stream
// (schema, one record batch, end-of-stream) and resets b for the next batch.
func (b *EventBatch) AppendIPC(dst []byte) ([]byte, error) {
	schemaMsg, err := eventSchemaMessage()
	if err != nil {
		return dst, err
	}
	dst = append(dst, schemaMsg...)
	// The body's layout: the nodes and buffers in schema order, depth first.
	b.nodes, b.bufs = b.nodes[:0], b.bufs[:0]
	var off int64
	buf := func(n int) {
		b.bufs = append(b.bufs, bufferSpec{offset: off, length: int64(n)})
		off += int64(pad8(n))
	}
	n := b.n
	for i := range ecCount {
		b.nodes = append(b.nodes, fieldNode{length: int64(n)})
		buf(0) // validity: none, no nulls
		c := &b.cols[i]
		switch {
		case i == ecArgNames:
			buf(len(c.offs))
			b.nodes = append(b.nodes, fieldNode{length: int64(len(b.argValues.vals) / 8)})
			buf(0)
			buf(len(b.argNames.offs))
			buf(len(b.argNames.vals))
		case i == ecArgValues:
			buf(len(c.offs))
			b.nodes = append(b.nodes, fieldNode{length: int64(len(b.argValues.vals) / 8)})
			buf(0)
			buf(len(b.argValues.vals))
		case varCols[i]:
			buf(len(c.offs))
			buf(len(c.vals))
		default:
			buf(len(c.vals))
		}
	}
	meta := b.recordBatchMeta(int64(n), off)
	// Framing: continuation marker, metadata length (padded so that the body
	// starts 8-aligned), metadata, body.
	metaLen := pad8(8+len(meta)) - 8
	dst = binary.LittleEndian.AppendUint32(dst, 0xFFFFFFFF)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(metaLen))
	dst = append(dst, meta...)
	dst = appendZeros(dst, metaLen-len(meta))
	body := func(p []byte) {
		dst = append(dst, p...)
		dst = appendZeros(dst, pad8(len(p))-len(p))
	}
	for i := range ecCount {
		c := &b.cols[i]
		switch {
		case i == ecArgNames:
			body(c.offs)
			body(b.argNames.offs)
			body(b.argNames.vals)
		case i == ecArgValues:
			body(c.offs)
			body(b.argValues.vals)
		case varCols[i]:
			body(c.offs)
			body(c.vals)
		default:
			body(c.vals)
		}
	}
	dst = binary.LittleEndian.AppendUint32(dst, 0xFFFFFFFF)
	dst = binary.LittleEndian.AppendUint32(dst, 0)
	b.reset()
	return dst, nil
}

// recordBatchMeta returns the flatbuffer Message{RecordBatch} for length
// rows and a body of bodyLen bytes (valid until the next call).
func (b *EventBatch) recordBatchMeta(length, bodyLen int64) []byte {
	fb := b.fb
	fb.Reset()
	// Vectors of structs are written back to front; a struct's fields too.
	// StartVector makes room for the whole vector, 8-aligned, so the 16-byte
	// structs are placed without a Prep each (the same bytes: no padding
	// falls between them); the Preps were most of the metadata's cost.
	fb.StartVector(16, len(b.bufs), 8)
	for i := len(b.bufs) - 1; i >= 0; i-- {
		fb.PlaceInt64(b.bufs[i].length)
		fb.PlaceInt64(b.bufs[i].offset)
	}
	bufs := fb.EndVector(len(b.bufs))
	fb.StartVector(16, len(b.nodes), 8)
	for i := len(b.nodes) - 1; i >= 0; i-- {
		fb.PlaceInt64(0) // null_count
		fb.PlaceInt64(b.nodes[i].length)
	}
	nodes := fb.EndVector(len(b.nodes))
	// table RecordBatch { length: long; nodes: [FieldNode]; buffers: [Buffer]; compression; variadicBufferCounts }
	fb.StartObject(5)
	fb.PrependInt64Slot(0, length, 0)
	fb.PrependUOffsetTSlot(1, nodes, 0)
	fb.PrependUOffsetTSlot(2, bufs, 0)
	rb := fb.EndObject()
	// table Message { version: MetadataVersion; header: MessageHeader (type, value); bodyLength: long; custom_metadata }
	fb.StartObject(5)
	fb.PrependInt64Slot(3, bodyLen, 0)
	fb.PrependUOffsetTSlot(2, rb, 0)
	fb.PrependInt16Slot(0, metadataV5, 0)
	fb.PrependByteSlot(1, headerRecordBatch, 0)
	fb.Finish(fb.EndObject())
	return fb.FinishedBytes()
}

// Arrow IPC flatbuffer constants (Schema.fbs, Message.fbs).
const (
	metadataV5        = 4 // MetadataVersion.V5
	headerRecordBatch = 3 // MessageHeader.RecordBatch
)

func pad8(n int) int { return (n + 7) &^ 7 }

var zeros [8]byte

func appendZeros(dst []byte, n int) []byte { return append(dst, zeros[:n]...) }

var (
	schemaMsgOnce sync.Once
	schemaMsg     []byte
	schemaMsgErr  error
)

// eventSchemaMessage returns the IPC schema message of EventArrowSchema, as
// arrow-go writes it (serialized once).
func eventSchemaMessage() ([]byte, error) {
	schemaMsgOnce.Do(func() {
		var out bytes.Buffer
		w := ipc.NewWriter(&out, ipc.WithSchema(EventArrowSchema()))
		if err := w.Close(); err != nil {
			schemaMsgErr = fmt.Errorf("cannot write the Arrow event schema: %w", err)
			return
		}
		b := out.Bytes()
		// The stream is the schema message and the 8-byte end-of-stream marker.
		if len(b) < 16 || !bytes.Equal(b[len(b)-8:], []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) {
			schemaMsgErr = fmt.Errorf("cannot write the Arrow event schema: unexpected stream of %d bytes", len(b))
			return
		}
		schemaMsg = bytes.Clone(b[:len(b)-8])
	})
	return schemaMsg, schemaMsgErr
}

// Release drops the batch's buffers. b must not be used afterwards.
func (b *EventBatch) Release() { *b = EventBatch{} }
