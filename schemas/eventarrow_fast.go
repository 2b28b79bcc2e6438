package schemas

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unsafe"
)

// The reader's fast path: a stream that begins with exactly the schema
// message EventBatch writes, followed by one record batch and the
// end-of-stream marker (what the ingest stage publishes), is read without
// arrow-go: the record batch's flatbuffer is checked field by field
// (flatbuf), its body copied into an 8-aligned scratch buffer and the
// columns viewed in place. arrow-go's reader costs some 400 allocations and
// tens of microseconds per batch, more than the events of a small batch.
// Any other stream (another writer's schema bytes, several batches,
// compression) takes arrow-go's path.

// errNotFast says the stream is not one the fast path reads.
var errNotFast = fmt.Errorf("not a single-batch stream of this build's schema message")

// fastNodes and fastBuffers are the field nodes and buffers of a record
// batch of EventArrowSchema, depth first.
var fastNodes, fastBuffers = func() (int, int) {
	nodes, bufs := 0, 0
	for i := range ecCount {
		nodes++
		switch {
		case i == ecArgNames:
			nodes, bufs = nodes+1, bufs+2+3
		case i == ecArgValues:
			nodes, bufs = nodes+1, bufs+2+2
		case varCols[i]:
			bufs += 3
		default:
			bufs += 2
		}
	}
	return nodes, bufs
}()

// openFast reads data on the fast path into r.cols, returning errNotFast
// when data is not for it.
func (r *EventReader) openFast(data []byte) error {
	schemaMsg, err := eventSchemaMessage()
	if err != nil || !bytes.HasPrefix(data, schemaMsg) {
		return errNotFast
	}
	rest := data[len(schemaMsg):]
	if len(rest) < 8 || binary.LittleEndian.Uint32(rest) != 0xFFFFFFFF {
		return errNotFast
	}
	metaLen := int(binary.LittleEndian.Uint32(rest[4:]))
	if metaLen < 8 || metaLen > len(rest)-8 {
		return fmt.Errorf("cannot read Arrow event batch: metadata of %d bytes in %d", metaLen, len(rest)-8)
	}
	fb := flatbuf{b: rest[8 : 8+metaLen]}
	msg, ok := fb.root()
	if !ok {
		return fmt.Errorf("cannot read Arrow event batch: %w", errBadSchemaMessage)
	}
	if t, ok := fb.u8(msg, 1); !ok || t != headerRecordBatch {
		return errNotFast // a dictionary or another message: arrow-go's business
	}
	bodyLen, ok1 := fb.i64(msg, 3)
	rb, ok2 := fb.table(msg, 2)
	body := rest[8+metaLen:]
	if !ok1 || !ok2 || rb < 0 || bodyLen < 0 || bodyLen > int64(len(body)) {
		return fmt.Errorf("cannot read Arrow event batch: malformed record batch metadata")
	}
	if c, ok := fb.ref(rb, 3); !ok || c >= 0 {
		return errNotFast // compressed
	}
	tail := body[bodyLen:]
	if !bytes.Equal(tail, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}) && len(tail) != 0 {
		return errNotFast // more batches
	}
	body = body[:bodyLen]
	length, ok := fb.i64(rb, 0)
	nodes, nn, ok1 := fb.vector(rb, 1, 16)
	bufs, nb, ok2 := fb.vector(rb, 2, 16)
	if !ok || !ok1 || !ok2 || nodes < 0 || bufs < 0 || nn != fastNodes || nb != fastBuffers || length < 0 || length > int64(len(body)) {
		return fmt.Errorf("cannot read Arrow event batch: the record batch does not have the event schema's layout")
	}
	// The body, 8-aligned, so that columns can be viewed as typed slices.
	words := (len(body) + 7) / 8
	if cap(r.scratch) < words {
		r.scratch = make([]uint64, words)
	}
	r.scratch = r.scratch[:words]
	var aligned []byte
	if words > 0 {
		aligned = unsafe.Slice((*byte)(unsafe.Pointer(&r.scratch[0])), len(body))
		copy(aligned, body)
	}
	n := int(length)
	node := func(j int) (int64, int64) {
		p := nodes + 16*j
		return int64(binary.LittleEndian.Uint64(fb.b[p:])), int64(binary.LittleEndian.Uint64(fb.b[p+8:]))
	}
	bi := 0
	var bad bool
	buffer := func() []byte {
		p := bufs + 16*bi
		bi++
		off, l := int64(binary.LittleEndian.Uint64(fb.b[p:])), int64(binary.LittleEndian.Uint64(fb.b[p+8:]))
		if off < 0 || l < 0 || off%8 != 0 || off > int64(len(aligned)) || l > int64(len(aligned))-off {
			bad = true
			return nil
		}
		return aligned[off : off+l]
	}
	c := &r.cols
	*c = eventCols{}
	ni := 0
	childLen := func() int {
		l, nulls := node(ni)
		ni++
		if l < 0 || l > int64(len(aligned)) || nulls != 0 {
			bad = true
			return 0
		}
		return int(l)
	}
	for i := range ecCount {
		if l := childLen(); l != n {
			bad = true
		}
		buffer() // validity: ignored, no nulls (checked on the node)
		switch {
		case i == ecArgNames:
			c.argOff = int32s(buffer())
			m := childLen()
			buffer()
			c.argNames = binCol{off: int32s(buffer()), data: buffer()}
			if !bad {
				if err := checkOffsets(EvColArgNames, c.argNames.off, m, len(c.argNames.data)); err != nil {
					return err
				}
				if err := checkOffsets(EvColArgNames, c.argOff, n, m); err != nil {
					return err
				}
			}
		case i == ecArgValues:
			c.valOff = int32s(buffer())
			m := childLen()
			buffer()
			c.argValues = typed[float64](buffer())
			if !bad && len(c.argValues) < m {
				bad = true
			}
			if !bad {
				if err := checkOffsets(EvColArgValues, c.valOff, n, m); err != nil {
					return err
				}
			}
		case varCols[i]:
			c.str[i] = binCol{off: int32s(buffer()), data: buffer()}
			if !bad {
				if err := checkOffsets(eventArrowFields[i].Name, c.str[i].off, n, len(c.str[i].data)); err != nil {
					return err
				}
			}
		default:
			v := buffer()
			switch i {
			case ecSeq:
				c.seq = typed[uint64](v)
			case ecResource:
				c.resource = typed[uint64](v)
			case ecBytesIn:
				c.bytesIn = typed[uint64](v)
			case ecBytesOut:
				c.bytesOut = typed[uint64](v)
			case ecTime:
				c.time = typed[arrowTimestamp](v)
			case ecLine:
				c.line = typed[uint32](v)
			case ecASN:
				c.asn = typed[uint32](v)
			case ecLatency:
				c.latency = typed[uint32](v)
			case ecLat:
				c.lat = typed[float32](v)
			case ecLon:
				c.lon = typed[float32](v)
			case ecStatus:
				c.status = typed[uint16](v)
			case ecSource:
				c.source = v
			case ecIDMethod:
				c.idMethod = v
			case ecProtocol:
				c.proto = v
			case ecAuth:
				c.auth = v
			case ecVerdict:
				c.verdict = v
			case ecCountry:
				c.country = v
				if len(v) < 2*n {
					bad = true
				}
			}
		}
		if bad {
			return fmt.Errorf("cannot read Arrow event batch: column %q is malformed", eventArrowFields[i].Name)
		}
	}
	if err := c.checkArgs(n); err != nil {
		return err
	}
	if err := c.checkLens(n); err != nil {
		return err
	}
	r.row, r.n, r.fast = 0, n, true
	return nil
}

// typed views an 8-aligned byte slice as a slice of T (little-endian
// machines; the buffer's tail that does not fill a T is left out).
func typed[T uint16 | uint32 | uint64 | float32 | float64 | arrowTimestamp](b []byte) []T {
	var z T
	size := int(unsafe.Sizeof(z))
	if len(b) < size {
		return nil
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), len(b)/size)
}

func int32s(b []byte) []int32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// i64 reads the int64 in field i of the table at pos (0 when absent).
func (f flatbuf) i64(pos, i int) (int64, bool) {
	p, ok := f.field(pos, i)
	if !ok || p < 0 {
		return 0, ok
	}
	if p+8 > len(f.b) {
		return 0, false
	}
	return int64(binary.LittleEndian.Uint64(f.b[p:])), true
}
