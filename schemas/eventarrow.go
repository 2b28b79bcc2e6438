package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Arrow form of events: the wire format between the ingest stage and the
// scorers (iotwatch.events.<partition>, stream IOTWATCH_EVENTS), and the
// input format of producers that publish Arrow batches themselves.
//
// One NATS message is one Arrow IPC stream (schema message, record batches,
// end-of-stream marker) whose schema is EventArrowSchema. Event schema
// version 1.0; every field is non-nullable (a batch with nulls is refused):
//
//	seq            uint64                 JetStream sequence of the log message the event came from (Event.Seq)
//	line           uint32                 0-based record of that message (Event.Line); Event.ID is EventID(seq, line)
//	time           timestamp[ns, UTC]     event time (Event.Time), already bounded against the arrival (ClampEventTime)
//	source         uint8                  SourceKind: 0 unknown, 1 gateway, 2 broker
//	source_id      utf8                   which gateway or broker wrote the log ("" unknown)
//	tenant         utf8
//	device         utf8                   REQUIRED (non-empty, no control characters, like the JSON decoders)
//	id_method      uint8                  IDMethod: 0 unknown, 1 certificate, 2 api_key, 3 token,
//	                                      4 mqtt_client_id, 5 mqtt_username, 6 client_ip
//	api_key        utf8                   API key id (never the secret)
//	class          utf8                   device model[/firmware]
//	firmware       utf8                   firmware or user agent
//	client_ip      binary                 0 bytes: none; 4: IPv4; 16: IPv6 (an IPv4-mapped IPv6 stays one). A zone is not carried
//	country        fixed_size_binary[2]   ISO 3166-1 alpha-2, upper case; two zero bytes: unknown
//	asn            uint32                 0: unknown
//	lat, lon       float32                degrees; both 0: unknown (from the log or GeoIP, enriched by the ingest stage)
//	protocol       uint8                  Protocol: 0 unknown, 1 http, 2 mqtt, 3 coap
//	command        utf8                   normalized command ("POST /v1/devices/{id}/unlock")
//	resource       uint64                 hash of the identifiers the normalizer replaced (Event.Resource)
//	resource_text  utf8                   their text (Event.ResourceText)
//	arg_names      list<utf8>             numeric arguments' names; names that are not ValidArgName, and
//	arg_values     list<float64>          non-finite values, are ignored; at most MaxArgs are kept
//	status         uint16                 HTTP status, MQTT reason code, CoAP code
//	auth           uint8                  AuthOutcome: 0 unknown, 1 ok, 2 failed, 3 none
//	verdict        uint8                  Verdict: 0 none, 1 allowed, 2 denied, 3 enforcer_unavailable
//	bytes_in       uint64
//	bytes_out      uint64
//	latency_us     uint32                 microseconds
//
// The hashes (DeviceKey, DeviceAlt, ClassKey, ModelKey, CommandID and the
// arguments' keys) are not carried: the reader derives them from the text,
// so that no producer can place an event under another device's key.
//
// The schema metadata holds "iotwatch.schema" = "event" and
// "iotwatch.event_schema_version" = "MAJOR.MINOR" (EventArrowVersion). A
// reader refuses another major version; a newer minor version only adds
// fields, which older readers ignore (fields are found by name). A field
// removed or changed is a new major version.

// Event schema metadata keys and values.
const (
	// ArrowMetaSchema is the metadata key naming the schema ("event").
	ArrowMetaSchema = "iotwatch.schema"
	// ArrowMetaEventVersion is the metadata key of the event schema's version.
	ArrowMetaEventVersion = "iotwatch.event_schema_version"
	// ArrowSchemaEvent is ArrowMetaSchema's value on event batches.
	ArrowSchemaEvent = "event"
	// EventArrowMajor and EventArrowMinor are the event schema's version.
	EventArrowMajor = 1
	EventArrowMinor = 0
)

// EventArrowVersion is the event schema version this build writes, "MAJOR.MINOR".
var EventArrowVersion = fmt.Sprintf("%d.%d", EventArrowMajor, EventArrowMinor)

// Event schema field names.
const (
	EvColSeq          = "seq"
	EvColLine         = "line"
	EvColTime         = "time"
	EvColSource       = "source"
	EvColSourceID     = "source_id"
	EvColTenant       = "tenant"
	EvColDevice       = "device"
	EvColIDMethod     = "id_method"
	EvColAPIKey       = "api_key"
	EvColClass        = "class"
	EvColFirmware     = "firmware"
	EvColClientIP     = "client_ip"
	EvColCountry      = "country"
	EvColASN          = "asn"
	EvColLat          = "lat"
	EvColLon          = "lon"
	EvColProtocol     = "protocol"
	EvColCommand      = "command"
	EvColResource     = "resource"
	EvColResourceText = "resource_text"
	EvColArgNames     = "arg_names"
	EvColArgValues    = "arg_values"
	EvColStatus       = "status"
	EvColAuth         = "auth"
	EvColVerdict      = "verdict"
	EvColBytesIn      = "bytes_in"
	EvColBytesOut     = "bytes_out"
	EvColLatencyUS    = "latency_us"
)

// The event schema's fields, in order; the column indices below follow it.
var eventArrowFields = []arrow.Field{
	{Name: EvColSeq, Type: arrow.PrimitiveTypes.Uint64},
	{Name: EvColLine, Type: arrow.PrimitiveTypes.Uint32},
	{Name: EvColTime, Type: &arrow.TimestampType{Unit: arrow.Nanosecond, TimeZone: "UTC"}},
	{Name: EvColSource, Type: arrow.PrimitiveTypes.Uint8},
	{Name: EvColSourceID, Type: arrow.BinaryTypes.String},
	{Name: EvColTenant, Type: arrow.BinaryTypes.String},
	{Name: EvColDevice, Type: arrow.BinaryTypes.String},
	{Name: EvColIDMethod, Type: arrow.PrimitiveTypes.Uint8},
	{Name: EvColAPIKey, Type: arrow.BinaryTypes.String},
	{Name: EvColClass, Type: arrow.BinaryTypes.String},
	{Name: EvColFirmware, Type: arrow.BinaryTypes.String},
	{Name: EvColClientIP, Type: arrow.BinaryTypes.Binary},
	{Name: EvColCountry, Type: &arrow.FixedSizeBinaryType{ByteWidth: 2}},
	{Name: EvColASN, Type: arrow.PrimitiveTypes.Uint32},
	{Name: EvColLat, Type: arrow.PrimitiveTypes.Float32},
	{Name: EvColLon, Type: arrow.PrimitiveTypes.Float32},
	{Name: EvColProtocol, Type: arrow.PrimitiveTypes.Uint8},
	{Name: EvColCommand, Type: arrow.BinaryTypes.String},
	{Name: EvColResource, Type: arrow.PrimitiveTypes.Uint64},
	{Name: EvColResourceText, Type: arrow.BinaryTypes.String},
	{Name: EvColArgNames, Type: arrow.ListOfNonNullable(arrow.BinaryTypes.String)},
	{Name: EvColArgValues, Type: arrow.ListOfNonNullable(arrow.PrimitiveTypes.Float64)},
	{Name: EvColStatus, Type: arrow.PrimitiveTypes.Uint16},
	{Name: EvColAuth, Type: arrow.PrimitiveTypes.Uint8},
	{Name: EvColVerdict, Type: arrow.PrimitiveTypes.Uint8},
	{Name: EvColBytesIn, Type: arrow.PrimitiveTypes.Uint64},
	{Name: EvColBytesOut, Type: arrow.PrimitiveTypes.Uint64},
	{Name: EvColLatencyUS, Type: arrow.PrimitiveTypes.Uint32},
}

const (
	ecSeq = iota
	ecLine
	ecTime
	ecSource
	ecSourceID
	ecTenant
	ecDevice
	ecIDMethod
	ecAPIKey
	ecClass
	ecFirmware
	ecClientIP
	ecCountry
	ecASN
	ecLat
	ecLon
	ecProtocol
	ecCommand
	ecResource
	ecResourceText
	ecArgNames
	ecArgValues
	ecStatus
	ecAuth
	ecVerdict
	ecBytesIn
	ecBytesOut
	ecLatency
	ecCount
)

var (
	eventSchemaOnce sync.Once
	eventSchema     *arrow.Schema
)

// EventArrowSchema returns the Arrow schema of events (see the field list
// above). The schema is shared and immutable.
func EventArrowSchema() *arrow.Schema {
	eventSchemaOnce.Do(func() {
		if len(eventArrowFields) != ecCount {
			panic("BUG: the event schema's fields and column indices disagree")
		}
		md := arrow.NewMetadata([]string{ArrowMetaSchema, ArrowMetaEventVersion}, []string{ArrowSchemaEvent, EventArrowVersion})
		eventSchema = arrow.NewSchema(eventArrowFields, &md)
	})
	return eventSchema
}

// ErrArrowVersion is wrapped by the error an EventReader returns for a batch
// of another major event schema version (or without one).
var ErrArrowVersion = errors.New("unsupported Arrow event schema version")

// EventReader reads events from Arrow IPC stream bytes of EventArrowSchema
// (version 1.x). Reading a row into an Event copies its text into the Event's
// own arena, which the Event reuses: in steady state nothing is allocated per
// event (per batch, the IPC reader allocates its record). The copy is what
// makes it safe: the Events a reader fills outlive the batch (the pipeline
// passes them through its shards to the workers and the collector, which
// reuse them for later events), while the record's buffers are released on
// the next Open. It is not safe for concurrent use.
type EventReader struct {
	mem    memory.Allocator
	capped cappedAllocator // mem, refusing allocations the data cannot need
	src    bytes.Reader
	rd     *ipc.Reader
	rec    arrow.RecordBatch
	row    int // next row of rec
	n      int // rows of rec
	cols   eventCols
	// fast: the current batch was read by openFast into cols (scratch holds
	// its body); no arrow-go reader or record.
	fast    bool
	scratch []uint64
}

// eventCols are the typed columns of the current record.
type eventCols struct {
	seq, resource, bytesIn, bytesOut []uint64
	line, asn, latency               []uint32
	status                           []uint16
	source, idMethod, proto, auth    []uint8
	verdict                          []uint8
	time                             []arrowTimestamp
	lat, lon                         []float32
	str                              [ecCount]binCol // utf8 columns and client_ip, by index
	country                          []byte
	argOff, valOff                   []int32
	argNames                         binCol
	argValues                        []float64
}

// binCol is a validated variable-size binary column: row i is
// data[off[i]:off[i+1]].
type binCol struct {
	off  []int32
	data []byte
}

func (c *binCol) value(i int) []byte { return c.data[c.off[i]:c.off[i+1]] }

// NewEventReader returns a reader that allocates from mem
// (memory.DefaultAllocator when nil).
func NewEventReader(mem memory.Allocator) *EventReader {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	return &EventReader{mem: mem}
}

// Open starts reading data, one Arrow IPC stream. It checks the schema (its
// name and major version, and every field this build reads, by name and
// type). data must stay unchanged until the next Open or Close. A bad stream
// is an error, never a panic.
func (r *EventReader) Open(data []byte) (err error) {
	r.Close()
	r.src.Reset(data)
	defer func() {
		if p := recover(); p != nil { // arrow-go panics on some malformed buffers
			r.Close()
			err = fmt.Errorf("cannot read Arrow event batch: malformed IPC data: %v", p)
		}
	}()
	// A message cannot be larger than the data: a length field claiming more
	// is refused before anything is allocated for it.
	switch err := r.openFast(data); err {
	case nil:
		return nil
	case errNotFast:
	default:
		r.Close()
		return err
	}
	if err := checkSchemaMessage(data); err != nil {
		return fmt.Errorf("cannot read Arrow event batch: %w", err)
	}
	limit := int64(len(data))
	r.capped.Allocator, r.capped.max = r.mem, 2*len(data)+4096
	rd, err := ipc.NewReader(&r.src, ipc.WithAllocator(&r.capped), ipc.WithMetadataSizeLimit(limit), ipc.WithBodySizeLimit(limit))
	if err != nil {
		return fmt.Errorf("cannot read Arrow event batch: %w", err)
	}
	r.rd = rd
	if err := checkEventSchema(rd.Schema()); err != nil {
		r.Close()
		return err
	}
	return nil
}

// checkEventSchema accepts s when it is an event schema of major version
// EventArrowMajor holding every field this build reads with its type.
func checkEventSchema(s *arrow.Schema) error {
	md := s.Metadata()
	if name, _ := metaValue(md, ArrowMetaSchema); name != ArrowSchemaEvent {
		return fmt.Errorf("cannot read Arrow event batch: schema %q is not %q: %w", name, ArrowSchemaEvent, ErrArrowVersion)
	}
	v, _ := metaValue(md, ArrowMetaEventVersion)
	major, _, _ := strings.Cut(v, ".")
	if m, err := strconv.Atoi(major); err != nil || m != EventArrowMajor {
		return fmt.Errorf("cannot read Arrow event batch: event schema version %q (this build reads %d.x): %w", v, EventArrowMajor, ErrArrowVersion)
	}
	for _, f := range eventArrowFields {
		idx := s.FieldIndices(f.Name)
		if len(idx) != 1 {
			return fmt.Errorf("cannot read Arrow event batch: field %q appears %d times", f.Name, len(idx))
		}
		if got := s.Field(idx[0]).Type; !arrow.TypeEqual(got, f.Type) {
			return fmt.Errorf("cannot read Arrow event batch: field %q is %s, want %s", f.Name, got, f.Type)
		}
	}
	return nil
}

func metaValue(md arrow.Metadata, key string) (string, bool) {
	i := md.FindKey(key)
	if i < 0 {
		return "", false
	}
	return md.Values()[i], true
}

// nextRecord moves to the next record batch with rows, validating its
// columns; it returns io.EOF at the end of the stream.
func (r *EventReader) nextRecord() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cannot read Arrow event batch: malformed record: %v", p)
		}
	}()
	for {
		if r.rec != nil {
			r.rec.Release()
			r.rec = nil
		}
		if !r.rd.Next() {
			if err := r.rd.Err(); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("cannot read Arrow event batch: %w", err)
			}
			return io.EOF
		}
		rec := r.rd.RecordBatch()
		rec.Retain()
		r.rec = rec
		if rec.NumRows() == 0 {
			continue
		}
		if err := r.cols.load(rec); err != nil {
			return err
		}
		r.row, r.n = 0, int(rec.NumRows())
		return nil
	}
}

// values returns the values of a primitive column, nil for nil (a column
// that load's get refused). The schema was checked: the type is T's.
func values[T any](a arrow.Array) []T {
	if a == nil {
		return nil
	}
	return a.(interface{ Values() []T }).Values()
}

// load takes rec's columns, checking that every one has rec's rows, no nulls
// and offsets within its data, so that reading rows cannot go out of bounds.
func (c *eventCols) load(rec arrow.RecordBatch) error {
	n := int(rec.NumRows())
	s := rec.Schema()
	col := func(name string) (arrow.Array, error) {
		a := rec.Column(s.FieldIndices(name)[0])
		if a.Len() != n {
			return nil, fmt.Errorf("cannot read Arrow event batch: column %q has %d rows, the batch %d", name, a.Len(), n)
		}
		if a.NullN() != 0 {
			return nil, fmt.Errorf("cannot read Arrow event batch: column %q has nulls", name)
		}
		return a, nil
	}
	var err error
	get := func(name string) arrow.Array {
		if err != nil {
			return nil
		}
		var a arrow.Array
		a, err = col(name)
		return a
	}
	c.seq, c.resource, c.bytesIn, c.bytesOut = values[uint64](get(EvColSeq)), values[uint64](get(EvColResource)), values[uint64](get(EvColBytesIn)), values[uint64](get(EvColBytesOut))
	c.line, c.asn, c.latency = values[uint32](get(EvColLine)), values[uint32](get(EvColASN)), values[uint32](get(EvColLatencyUS))
	c.source, c.idMethod, c.proto = values[uint8](get(EvColSource)), values[uint8](get(EvColIDMethod)), values[uint8](get(EvColProtocol))
	c.auth, c.verdict = values[uint8](get(EvColAuth)), values[uint8](get(EvColVerdict))
	c.lat, c.lon = values[float32](get(EvColLat)), values[float32](get(EvColLon))
	c.status, c.time = values[uint16](get(EvColStatus)), values[arrow.Timestamp](get(EvColTime))
	if a := get(EvColCountry); a != nil {
		c.country = nil
		if buf := a.Data().Buffers()[1]; buf != nil && len(buf.Bytes()) >= 2*a.Data().Offset() {
			c.country = buf.Bytes()[2*a.Data().Offset():]
		}
		if len(c.country) < 2*n {
			err = fmt.Errorf("cannot read Arrow event batch: column %q is short", EvColCountry)
		}
	}
	for _, i := range [...]int{ecSourceID, ecTenant, ecDevice, ecAPIKey, ecClass, ecFirmware, ecClientIP, ecCommand, ecResourceText} {
		name := eventArrowFields[i].Name
		a := get(name)
		if a == nil {
			break
		}
		switch a := a.(type) {
		case *array.String:
			c.str[i] = binCol{off: a.ValueOffsets(), data: a.ValueBytes()}
		case *array.Binary:
			c.str[i] = binCol{off: a.ValueOffsets(), data: a.ValueBytes()}
		}
		if err == nil {
			err = checkOffsets(name, c.str[i].off, n, len(c.str[i].data))
		}
	}
	names, values := get(EvColArgNames), get(EvColArgValues)
	if err != nil {
		return err
	}
	nl, vl := names.(*array.List), values.(*array.List)
	c.argOff, c.valOff = nl.Offsets(), vl.Offsets()
	nv, ok := nl.ListValues().(*array.String)
	if !ok || nv.NullN() != 0 || vl.ListValues().NullN() != 0 {
		return fmt.Errorf("cannot read Arrow event batch: argument lists hold nulls")
	}
	c.argNames = binCol{off: nv.ValueOffsets(), data: nv.ValueBytes()}
	c.argValues = vl.ListValues().(*array.Float64).Float64Values()
	if err := checkOffsets(EvColArgNames, c.argOff, n, nv.Len()); err != nil {
		return err
	}
	if err := checkOffsets(EvColArgValues, c.valOff, n, len(c.argValues)); err != nil {
		return err
	}
	if err := checkOffsets(EvColArgNames, c.argNames.off, nv.Len(), len(c.argNames.data)); err != nil {
		return err
	}
	if err := c.checkArgs(n); err != nil {
		return err
	}
	return c.checkLens(n)
}

// checkArgs checks that every row has as many argument names as values.
func (c *eventCols) checkArgs(n int) error {
	for i := range n {
		if c.argOff[i+1]-c.argOff[i] != c.valOff[i+1]-c.valOff[i] {
			return fmt.Errorf("cannot read Arrow event batch: row %d has %d argument names and %d values", i,
				c.argOff[i+1]-c.argOff[i], c.valOff[i+1]-c.valOff[i])
		}
	}
	return nil
}

// checkLens checks that every fixed-width column holds n values.
func (c *eventCols) checkLens(n int) error {
	if len(c.seq) < n || len(c.resource) < n || len(c.bytesIn) < n || len(c.bytesOut) < n || len(c.line) < n || len(c.asn) < n ||
		len(c.latency) < n || len(c.status) < n || len(c.source) < n || len(c.idMethod) < n || len(c.proto) < n ||
		len(c.auth) < n || len(c.verdict) < n || len(c.time) < n || len(c.lat) < n || len(c.lon) < n || len(c.country) < 2*n {
		return fmt.Errorf("cannot read Arrow event batch: a column's values are shorter than the batch")
	}
	return nil
}

// arrowTimestamp is arrow.Timestamp (an int64), for typed.
type arrowTimestamp = arrow.Timestamp

// checkOffsets checks that offsets describe n values within size bytes (or
// child values).
func checkOffsets(name string, off []int32, n, size int) error {
	if len(off) < n+1 {
		return fmt.Errorf("cannot read Arrow event batch: column %q has %d offsets for %d rows", name, len(off), n)
	}
	if off[0] < 0 {
		return fmt.Errorf("cannot read Arrow event batch: column %q has a negative offset", name)
	}
	for i := range n {
		if off[i+1] < off[i] {
			return fmt.Errorf("cannot read Arrow event batch: column %q has decreasing offsets", name)
		}
	}
	if int(off[n]) > size {
		return fmt.Errorf("cannot read Arrow event batch: column %q has offsets beyond its data", name)
	}
	return nil
}

// Next reads the next event into ev (which it resets first). It returns
// io.EOF after the last one. A row that is not a valid event (no device, a
// control character in the identity, an unknown code) is a *DecodeError
// (shared: do not modify it); the reader then goes on with the next row. A
// malformed stream is another error, after which Next returns io.EOF.
func (r *EventReader) Next(ev *Event) error {
	if r.fast {
		if r.row >= r.n {
			return io.EOF
		}
		i := r.row
		r.row++
		return r.cols.read(i, ev)
	}
	if r.rd == nil {
		return io.EOF
	}
	if r.row >= r.n {
		if err := r.nextRecord(); err != nil {
			if err != io.EOF {
				r.Close()
				r.src.Reset(nil)
			}
			return err
		}
	}
	i := r.row
	r.row++
	return r.cols.read(i, ev)
}

// read decodes row i into ev.
func (c *eventCols) read(i int, ev *Event) error {
	ev.Reset()
	ev.Seq, ev.Line = c.seq[i], c.line[i]
	ev.Time = int64(c.time[i])
	ev.Source = SourceKind(c.source[i])
	ev.IDMethod = IDMethod(c.idMethod[i])
	ev.Protocol = Protocol(c.proto[i])
	ev.Auth = AuthOutcome(c.auth[i])
	ev.Verdict = Verdict(c.verdict[i])
	if int(ev.Source) >= len(sourceNames) || int(ev.IDMethod) >= len(idNames) || int(ev.Protocol) >= len(protoNames) ||
		int(ev.Auth) >= len(authNames) || int(ev.Verdict) >= len(verdictNames) {
		return errRowEnum
	}
	ev.SourceID = ev.set(c.str[ecSourceID].value(i))
	ev.Tenant = ev.set(c.str[ecTenant].value(i))
	ev.Device = ev.set(c.str[ecDevice].value(i))
	if len(ev.Device) == 0 {
		return errRowDevice
	}
	if HasControl(ev.Device) || HasControl(ev.Tenant) {
		return errRowControl
	}
	ev.APIKey = ev.set(c.str[ecAPIKey].value(i))
	ev.Class = ev.set(c.str[ecClass].value(i))
	ev.Firmware = ev.set(c.str[ecFirmware].value(i))
	switch ip := c.str[ecClientIP].value(i); len(ip) {
	case 0:
	case 4:
		ev.ClientIP = netip.AddrFrom4([4]byte(ip))
	case 16:
		ev.ClientIP = netip.AddrFrom16([16]byte(ip))
	default:
		return errRowIP
	}
	ctry := Country{c.country[2*i], c.country[2*i+1]}
	if ctry.Known() && !(ctry[0] >= 'A' && ctry[0] <= 'Z' && ctry[1] >= 'A' && ctry[1] <= 'Z') {
		return errRowCountry
	}
	ev.Country = ctry
	ev.ASN = c.asn[i]
	ev.Lat, ev.Lon = c.lat[i], c.lon[i]
	ev.Command = ev.set(c.str[ecCommand].value(i))
	ev.Resource = c.resource[i]
	ev.ResourceText = ev.set(c.str[ecResourceText].value(i))
	for a, v := c.argOff[i], c.valOff[i]; a < c.argOff[i+1]; a, v = a+1, v+1 {
		ev.SetArg(c.argNames.value(int(a)), c.argValues[v])
	}
	ev.Status = c.status[i]
	ev.BytesIn, ev.BytesOut = c.bytesIn[i], c.bytesOut[i]
	ev.Latency = c.latency[i]
	ev.setKeys()
	ev.CommandID = Hash(ev.Command)
	ev.ID = EventID(ev.Seq, ev.Line)
	return nil
}

// The per-row decode errors, preallocated so that a bad row does not
// allocate either.
var (
	errRowEnum    = &DecodeError{Reason: DeadLetterBadField, Detail: "an enumeration (source, id_method, protocol, auth or verdict) holds an unknown code"}
	errRowDevice  = &DecodeError{Reason: DeadLetterMissingField, Detail: "device is required"}
	errRowControl = &DecodeError{Reason: DeadLetterBadField, Detail: DetailControlInIdentity}
	errRowIP      = &DecodeError{Reason: DeadLetterBadField, Detail: "client_ip is neither 0, 4 nor 16 bytes"}
	errRowCountry = &DecodeError{Reason: DeadLetterBadField, Detail: "country is not an upper-case ISO 3166-1 alpha-2 code"}
)

// Close releases the current record. The reader may be opened again.
func (r *EventReader) Close() {
	if r.rec != nil {
		r.rec.Release()
		r.rec = nil
	}
	if r.rd != nil {
		r.rd.Release()
		r.rd = nil
	}
	r.row, r.n, r.fast = 0, 0, false
	r.cols = eventCols{}
}
