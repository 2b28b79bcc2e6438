package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Defences of the Arrow reader against hostile input. arrow-go trusts the
// lengths in an IPC stream's schema message (a vector length of a billion
// children is a make of a billion fields: the process dies of it, which no
// recover catches) and the sizes it is asked to allocate. Before arrow-go
// sees a stream, checkSchemaMessage walks its first message (the schema) and
// checks every length and offset it holds against the bytes there are, and
// the types against the few the event schema uses; cappedAllocator refuses
// an allocation larger than the data could need.

var errBadSchemaMessage = errors.New("malformed schema message")

// checkSchemaMessage checks the framing and the flatbuffer of the first IPC
// message of data, which must be a schema.
func checkSchemaMessage(data []byte) error {
	if len(data) < 8 {
		return errBadSchemaMessage
	}
	n := binary.LittleEndian.Uint32(data)
	off := 4
	if n == 0xFFFFFFFF { // continuation marker, then the length
		n = binary.LittleEndian.Uint32(data[4:])
		off = 8
	}
	if n < 4 || uint64(n) > uint64(len(data)-off) {
		return errBadSchemaMessage
	}
	fb := flatbuf{b: data[off : off+int(n)]}
	msg, ok := fb.root()
	if !ok {
		return errBadSchemaMessage
	}
	// Message: version 0, header_type 1, header 2, bodyLength 3, custom_metadata 4.
	if t, ok := fb.u8(msg, 1); !ok || t != 1 { // MessageHeader.Schema
		return fmt.Errorf("%w: the first message is not a schema", errBadSchemaMessage)
	}
	schema, ok := fb.table(msg, 2)
	if !ok || schema < 0 || !fb.keyValues(msg, 4) {
		return errBadSchemaMessage
	}
	// Schema: endianness 0, fields 1, custom_metadata 2, features 3.
	if !fb.keyValues(schema, 2) || !fb.vectorOK(schema, 3, 8) {
		return errBadSchemaMessage
	}
	if !fb.fields(schema, 1, 0) {
		return errBadSchemaMessage
	}
	return nil
}

// flatbuf reads a flatbuffer defensively: every accessor reports false
// rather than read outside b.
type flatbuf struct{ b []byte }

func (f flatbuf) u32(pos int) (uint32, bool) {
	if pos < 0 || pos+4 > len(f.b) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(f.b[pos:]), true
}

func (f flatbuf) u16(pos int) (uint16, bool) {
	if pos < 0 || pos+2 > len(f.b) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(f.b[pos:]), true
}

// root returns the root table's position.
func (f flatbuf) root() (int, bool) {
	u, ok := f.u32(0)
	if !ok || uint64(u) >= uint64(len(f.b)) {
		return 0, false
	}
	return int(u), f.tableOK(int(u))
}

// tableOK checks the table at pos and its vtable.
func (f flatbuf) tableOK(pos int) bool {
	so, ok := f.u32(pos)
	if !ok {
		return false
	}
	vt := int64(pos) - int64(int32(so))
	if vt < 0 || vt >= int64(len(f.b)) {
		return false
	}
	vsize, ok1 := f.u16(int(vt))
	tsize, ok2 := f.u16(int(vt) + 2)
	return ok1 && ok2 && vsize >= 4 && vsize%2 == 0 && int(vt)+int(vsize) <= len(f.b) && pos+int(tsize) <= len(f.b)
}

// field returns the position of field i of the table at pos, -1 when absent.
func (f flatbuf) field(pos, i int) (int, bool) {
	so, _ := f.u32(pos)
	vt := pos - int(int32(so))
	vsize, _ := f.u16(vt)
	tsize, _ := f.u16(vt + 2)
	if 4+2*i+2 > int(vsize) {
		return -1, true
	}
	o, _ := f.u16(vt + 4 + 2*i)
	if o == 0 {
		return -1, true
	}
	if int(o) >= int(tsize) {
		return 0, false
	}
	return pos + int(o), true
}

func (f flatbuf) u8(pos, i int) (uint8, bool) {
	p, ok := f.field(pos, i)
	if !ok || p < 0 {
		return 0, ok
	}
	if p >= len(f.b) {
		return 0, false
	}
	return f.b[p], true
}

// ref follows the offset in field i of the table at pos (-1: absent).
func (f flatbuf) ref(pos, i int) (int, bool) {
	p, ok := f.field(pos, i)
	if !ok || p < 0 {
		return p, ok
	}
	u, ok := f.u32(p)
	if !ok || uint64(p)+uint64(u) >= uint64(len(f.b)) {
		return 0, false
	}
	return p + int(u), true
}

// table returns the table in field i (-1: absent), checked.
func (f flatbuf) table(pos, i int) (int, bool) {
	t, ok := f.ref(pos, i)
	if !ok || t < 0 {
		return t, ok
	}
	return t, f.tableOK(t)
}

// vector returns the vector in field i: the position of its first element and
// its length, checked to fit elements of size bytes (-1: absent).
func (f flatbuf) vector(pos, i, size int) (int, int, bool) {
	v, ok := f.ref(pos, i)
	if !ok || v < 0 {
		return v, 0, ok
	}
	n, ok := f.u32(v)
	if !ok || uint64(v)+4+uint64(n)*uint64(size) > uint64(len(f.b)) {
		return 0, 0, false
	}
	return v + 4, int(n), true
}

func (f flatbuf) vectorOK(pos, i, size int) bool {
	_, _, ok := f.vector(pos, i, size)
	return ok
}

// tables checks a vector of tables in field i with check.
func (f flatbuf) tables(pos, i int, check func(int) bool) bool {
	v, n, ok := f.vector(pos, i, 4)
	if !ok || v < 0 {
		return ok
	}
	for j := range n {
		e := v + 4*j
		u, _ := f.u32(e)
		t := e + int(u)
		if uint64(e)+uint64(u) >= uint64(len(f.b)) || !f.tableOK(t) || !check(t) {
			return false
		}
	}
	return true
}

// keyValues checks a vector of KeyValue (key 0, value 1: strings) in field i.
func (f flatbuf) keyValues(pos, i int) bool {
	return f.tables(pos, i, func(kv int) bool { return f.vectorOK(kv, 0, 1) && f.vectorOK(kv, 1, 1) })
}

// maxFieldDepth bounds the nesting of fields (the event schema has 2 levels).
const maxFieldDepth = 8

// fields checks a vector of Field (name 0, nullable 1, type_type 2, type 3,
// dictionary 4, children 5, custom_metadata 6) in field i, recursively.
func (f flatbuf) fields(pos, i, depth int) bool {
	if depth > maxFieldDepth {
		return false
	}
	return f.tables(pos, i, func(fl int) bool {
		tt, ok := f.u8(fl, 2)
		if !ok || !arrowTypeAllowed(tt) {
			return false
		}
		typ, ok := f.table(fl, 3)
		if !ok || typ < 0 {
			return false
		}
		if tt == 10 && !f.vectorOK(typ, 1, 1) { // Timestamp's timezone string
			return false
		}
		if d, ok := f.ref(fl, 4); !ok || d >= 0 { // dictionaries: not in the event schema
			return false
		}
		return f.vectorOK(fl, 0, 1) && f.keyValues(fl, 6) && f.fields(fl, 5, depth+1)
	})
}

// arrowTypeAllowed reports whether flatbuffer Type t is one the event schema
// uses or a compatible minor version may add: Null, Int, FloatingPoint,
// Binary, Utf8, Bool, Timestamp, List, FixedSizeBinary.
func arrowTypeAllowed(t uint8) bool {
	switch t {
	case 1, 2, 3, 4, 5, 6, 10, 12, 15:
		return true
	}
	return false
}

// cappedAllocator refuses (panics, which the reader recovers into an error)
// any allocation larger than max bytes.
type cappedAllocator struct {
	memory.Allocator
	max int
}

func (a *cappedAllocator) Allocate(size int) []byte {
	if size > a.max || size < 0 {
		panic(fmt.Sprintf("an allocation of %d bytes exceeds the bound of %d for this batch", size, a.max))
	}
	return a.Allocator.Allocate(size)
}

func (a *cappedAllocator) Reallocate(size int, b []byte) []byte {
	if size > a.max || size < 0 {
		panic(fmt.Sprintf("an allocation of %d bytes exceeds the bound of %d for this batch", size, a.max))
	}
	return a.Allocator.Reallocate(size, b)
}
