package schemas

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
	"unicode/utf8"
	"unsafe"
)

// Canonical JSON encoding, version 1.
//
// One event is one JSON object on one line; a message may carry several lines
// separated by '\n'. Fields (all optional unless marked):
//
//	v           number   encoding version; 1 if absent, anything else is rejected
//	id          string   the record's own id: accepted and ignored (Event.ID is the stream position's)
//	ts          string   event time, RFC 3339 with optional fraction (REQUIRED);
//	            number   or Unix seconds with optional fraction
//	src         string   "gateway" | "broker"
//	src_id      string   which gateway or broker wrote the log
//	tenant      string
//	device      string   device id (REQUIRED unless id_by is "client_ip" and ip is set)
//	id_by       string   "certificate" | "api_key" | "token" | "mqtt_client_id" | "mqtt_username" | "client_ip"
//	api_key     string   API key id (never the secret)
//	class       string   device model[/firmware]: the cold-start prior
//	fw          string   firmware version or user agent
//	ip          string   client IP address
//	country     string   ISO 3166-1 alpha-2, when the gateway knows it
//	asn         number
//	proto       string   "http" | "mqtt" | "coap"
//	cmd         string   command, normalized or raw ("POST /v1/devices/d-1/unlock")
//	method,path string   HTTP method and path, normalized into cmd when cmd is absent
//	op,topic    string   MQTT operation (PUBLISH, SUBSCRIBE, CONNECT) and topic, likewise
//	status      number   HTTP status / MQTT reason code / CoAP code
//	auth        string   "ok" | "failed" | "none"
//	verdict     string   the enforcement point's own verdict: "none" | "allowed" |
//	                     "denied" (by an iotwatch decision) | "enforcer_unavailable"
//	                     (see Verdict); absent means "none". Added in version 1
//	                     without a bump: older readers ignore it as unknown.
//	bytes_in    number
//	bytes_out   number
//	latency_ms  number
//	args        object   numeric command arguments, {"temp": 90.5}: members with
//	                     number values and names of 1-32 letters, digits, '_',
//	                     '-', '.' are kept (the first MaxArgs); other members are
//	                     ignored; a value that is not an object is a bad_field
//
// Unknown fields are ignored, so producers may add their own. Commands are always
// passed through NormalizeCommand, so a raw path in cmd is normalized too; the
// numeric parameters of its query string ("?temp=90") become args, unless
// "args" names them already.

// DecodeError is a per-record decode failure. Reason is one of the DeadLetter*
// constants (deadletter.go), a stable, machine-readable code that becomes the
// dead letter's reason header; Detail says what was wrong.
type DecodeError struct {
	Reason string
	Detail string
}

func (e *DecodeError) Error() string { return "cannot decode event: " + e.Reason + ": " + e.Detail }

// DefaultMaxLineBytes bounds one encoded event.
const DefaultMaxLineBytes = 16 << 10

// Decoder decodes canonical JSON lines into Events without allocating in steady
// state. A Decoder is not safe for concurrent use; give each goroutine its own.
type Decoder struct {
	// MaxLineBytes rejects longer lines (DefaultMaxLineBytes if 0).
	MaxLineBytes int
	// MinTime and MaxFuture bound event times against the arrival time now
	// passed to Decode (see ClampEventTime): older than MinTime (Unix ns) or
	// later than now+MaxFuture (ns) is rejected with
	// DeadLetterTimestampOutOfRange; later than now but within MaxFuture is
	// clamped to now. Zero values mean 2000-01-01 and DefaultMaxClockSkew.
	MinTime   int64
	MaxFuture int64

	sc    scanner
	argSc scanner // the "args" object, scanned again after sc validated it
	err   *DecodeError
	errv  DecodeError
	ev    *Event

	method, path []byte
	haveCmd      bool
	haveTime     bool
	ipText       []byte
}

var errCannotParse = errors.New("cannot parse")

// MinEventTime is the earliest event time a decoder accepts (Unix ns,
// 2000-01-01T00:00:00Z): earlier is a broken clock.
const MinEventTime = 946684800 * int64(1e9)

// DefaultMaxClockSkew is the default bound on how far an event time may be
// ahead of the arrival of its record (the stream's timestamp of the message
// that carried it): run's --max-clock-skew. A gateway stamps a log line
// before the line reaches the stream, so a time after the arrival is the
// writer's clock running ahead: NTP keeps gateways within milliseconds, an
// embedded device or an unsynchronized broker may drift by seconds to
// minutes; five minutes is the tolerance Kerberos settled on. Farther ahead
// is a broken clock or a forgery, which would move event-time clocks (the
// silence sweep, cool-downs, a device's baseline) into the future.
const DefaultMaxClockSkew = 5 * time.Minute

// Timestamp out-of-range details (DecodeError.Detail), one per side.
const (
	DetailTimeTooOld    = "the time is before 2000-01-01"
	DetailTimeTooFuture = "the time is ahead of the record's arrival by more than the clock-skew bound (max_clock_skew)"
)

// ClampEventTime bounds an event time t (Unix ns) against its record's
// arrival time now (Unix ns; 0: unknown, as in a replay of a file, where no
// bound applies but MinEventTime): a time within maxSkew (ns; 0:
// DefaultMaxClockSkew) after the arrival is clamped to the arrival, so that
// no event is later than the moment it was received; one beyond is rejected
// (ok false, with the detail to dead-letter it with), as is one before
// MinEventTime. Deterministic for a given arrival time: a redelivered
// message keeps its stream timestamp.
func ClampEventTime(t, now, maxSkew int64) (_ int64, detail string, ok bool) {
	if t < MinEventTime {
		return t, DetailTimeTooOld, false
	}
	if now <= 0 || t <= now {
		return t, "", true
	}
	if maxSkew <= 0 {
		maxSkew = int64(DefaultMaxClockSkew)
	}
	if t-now > maxSkew {
		return t, DetailTimeTooFuture, false
	}
	return now, "", true
}

// HasControl reports whether b holds a control character: C0 (NUL, ESC, a
// newline...), DEL, or C1 (U+0080-U+009F, as UTF-8). Device identities with
// one are rejected (DetailControlInIdentity): a NUL or a terminal escape
// sequence in a device id would reach an analyst's terminal, a log and a
// block's KV key. It does not allocate.
func HasControl(b []byte) bool {
	for i, c := range b {
		if c < 0x20 || c == 0x7f || (c == 0xc2 && i+1 < len(b) && b[i+1] >= 0x80 && b[i+1] <= 0x9f) {
			return true
		}
	}
	return false
}

// DetailControlInIdentity is the DeadLetterBadField detail of a record whose
// device identity holds a control character (HasControl).
const DetailControlInIdentity = "the device identity holds a control character"

// Decode decodes one line into ev (which it resets first). seq and line locate the
// record in the stream (they derive ev.ID when the record has no id); now (Unix
// ns) is the record's arrival time, used only to bound the event time
// (ClampEventTime; 0 bounds it by MinEventTime alone). On error ev is left in an
// unspecified state and the error is a *DecodeError (valid until the next call;
// copy it to keep it).
func (d *Decoder) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *Event) error {
	ev.Reset()
	ev.Seq, ev.Line = seq, lineNo
	d.err = nil
	d.ev = ev
	d.method, d.path, d.ipText, d.haveCmd, d.haveTime = nil, nil, nil, false, false
	max := d.MaxLineBytes
	if max == 0 {
		max = DefaultMaxLineBytes
	}
	if len(line) > max {
		return d.fail(DeadLetterTooLarge, "line is longer than the limit")
	}
	if !utf8.Valid(line) {
		return d.fail(DeadLetterInvalidUTF8, "line is not valid UTF-8")
	}
	if err := d.sc.object(line, d); err != nil {
		if d.err != nil {
			return d.err
		}
		if err == errNotObject {
			return d.fail(DeadLetterNotObject, "the line is not a JSON object")
		}
		return d.fail(DeadLetterMalformedJSON, err.Error())
	}
	if d.err != nil {
		return d.err
	}
	return d.finish(now)
}

func (d *Decoder) fail(reason, detail string) error {
	d.errv = DecodeError{Reason: reason, Detail: detail}
	d.err = &d.errv
	return d.err
}

func (d *Decoder) failf(reason, format string, args ...any) {
	if d.err == nil {
		d.fail(reason, fmt.Sprintf(format, args...))
	}
}

func (d *Decoder) str(key []byte, v *jsonValue) []byte {
	switch v.kind {
	case jsonString:
		return v.raw
	case jsonNull:
		return nil
	}
	d.failf(DeadLetterBadField, "field %q must be a string", key)
	return nil
}

func (d *Decoder) num(key []byte, v *jsonValue) float64 {
	if v.kind != jsonNumber || math.IsNaN(v.num) || math.IsInf(v.num, 0) {
		d.failf(DeadLetterBadField, "field %q must be a number", key)
		return 0
	}
	return v.num
}

func (d *Decoder) uint(key []byte, v *jsonValue, max float64) uint64 {
	f := d.num(key, v)
	if f < 0 || f > max {
		d.failf(DeadLetterBadField, "field %q is out of range", key)
		return 0
	}
	return uint64(f)
}

// field handles one key of the object. Keys are compared as strings without
// conversion (the compiler does not allocate for string(b) == "const").
func (d *Decoder) field(key []byte, v *jsonValue) {
	if d.err != nil {
		return
	}
	ev := d.ev
	switch string(key) {
	case "v":
		if d.num(key, v) != SchemaVersion {
			d.failf(DeadLetterUnsupportedVersion, "encoding version %s is not supported (want %d)", v.raw, SchemaVersion)
		}
	case "id":
		// Accepted and ignored: a producer must not choose Event.ID, or it
		// could overwrite another's row (EventID, from the stream position).
		d.str(key, v)
	case "ts":
		d.haveTime = true
		switch v.kind {
		case jsonString:
			b := v.raw
			t, ok := ParseRFC3339(b)
			if !ok {
				d.failf(DeadLetterBadTimestamp, "ts %q is not an RFC 3339 time", b)
				return
			}
			ev.Time = t
		case jsonNumber:
			f := d.num(key, v)
			if f < 0 || f > 1e11 {
				d.failf(DeadLetterBadTimestamp, "ts %v is not Unix seconds", f)
				return
			}
			sec, frac := math.Modf(f)
			ev.Time = int64(sec)*1e9 + int64(frac*1e9)
		default:
			d.failf(DeadLetterBadTimestamp, "ts must be a string or a number")
		}
	case "src":
		switch string(d.str(key, v)) {
		case "gateway":
			ev.Source = SourceGateway
		case "broker":
			ev.Source = SourceBroker
		default:
			d.failf(DeadLetterBadField, "src must be gateway or broker")
		}
	case "src_id":
		ev.SourceID = ev.set(d.str(key, v))
	case "tenant":
		ev.Tenant = ev.set(d.str(key, v))
	case "device":
		ev.Device = ev.set(d.str(key, v))
	case "id_by":
		m, ok := parseIDMethod(d.str(key, v))
		if !ok {
			d.failf(DeadLetterBadField, "id_by %q is not a known identification method", v.raw)
		}
		ev.IDMethod = m
	case "api_key":
		ev.APIKey = ev.set(d.str(key, v))
	case "class":
		ev.Class = ev.set(d.str(key, v))
	case "fw":
		ev.Firmware = ev.set(d.str(key, v))
	case "ip":
		b := d.str(key, v)
		if len(b) == 0 {
			return
		}
		a, err := parseAddr(b)
		if err != nil {
			d.failf(DeadLetterBadField, "ip %q is not an IP address", b)
			return
		}
		ev.ClientIP = a
		d.ipText = b
	case "country":
		b := d.str(key, v)
		switch {
		case len(b) == 0 || (len(b) == 2 && b[0] == '-' && b[1] == '-'):
		case len(b) == 2 && isAlpha(b[0]) && isAlpha(b[1]):
			ev.Country = Country{b[0] &^ 0x20, b[1] &^ 0x20} // upper case
		default:
			d.failf(DeadLetterBadField, "country %q is not an ISO 3166-1 alpha-2 code", b)
		}
	case "asn":
		ev.ASN = uint32(d.uint(key, v, math.MaxUint32))
	case "proto":
		switch string(d.str(key, v)) {
		case "http", "https", "HTTP":
			ev.Protocol = ProtoHTTP
		case "mqtt", "MQTT":
			ev.Protocol = ProtoMQTT
		case "coap", "CoAP":
			ev.Protocol = ProtoCoAP
		default:
			d.failf(DeadLetterBadField, "proto %q is not http, mqtt or coap", v.raw)
		}
	case "cmd":
		d.path = d.str(key, v)
		d.haveCmd = true
	case "method", "op":
		d.method = d.str(key, v)
	case "path", "topic":
		if !d.haveCmd {
			d.path = d.str(key, v)
		}
	case "status":
		ev.Status = uint16(d.uint(key, v, math.MaxUint16))
	case "auth":
		switch string(d.str(key, v)) {
		case "ok", "success":
			ev.Auth = AuthOK
		case "failed", "fail", "denied":
			ev.Auth = AuthFailed
		case "none", "":
			ev.Auth = AuthNone
		default:
			d.failf(DeadLetterBadField, "auth %q is not ok, failed or none", v.raw)
		}
	case "verdict":
		vd, ok := ParseVerdict(d.str(key, v))
		if !ok {
			d.failf(DeadLetterBadField, "verdict %q is not none, allowed, denied or enforcer_unavailable", v.raw)
		}
		ev.Verdict = vd
	case "bytes_in":
		ev.BytesIn = d.uint(key, v, 1<<53)
	case "bytes_out":
		ev.BytesOut = d.uint(key, v, 1<<53)
	case "latency_ms":
		f := d.num(key, v)
		if f < 0 || f > math.MaxUint32/1000 {
			d.failf(DeadLetterBadField, "field %q is out of range", key)
			return
		}
		ev.Latency = uint32(f * 1000)
	case "args":
		switch v.kind {
		case jsonNull:
		case jsonNested:
			d.args(v.raw)
		default:
			d.failf(DeadLetterBadField, "args must be an object of numbers")
		}
	}
}

func isAlpha(c byte) bool { c &^= 0x20; return c >= 'A' && c <= 'Z' }

func parseIDMethod(b []byte) (IDMethod, bool) {
	for i := 1; i < len(idNames); i++ {
		if string(b) == idNames[i] {
			return IDMethod(i), true
		}
	}
	return IDUnknown, len(b) == 0
}

// parseAddr parses an IP without allocating: a plain dotted quad itself,
// anything else with netip.ParseAddr, which does not retain its argument (an
// IPv6 zone is interned as a copy), so viewing b as a string is safe.
func parseAddr(b []byte) (netip.Addr, error) {
	if a, ok := parseDottedQuad(b); ok {
		return a, nil
	}
	if len(b) == 0 || len(b) > 64 {
		return netip.Addr{}, errCannotParse
	}
	return netip.ParseAddr(unsafe.String(&b[0], len(b)))
}

// parseDottedQuad parses an IPv4 address of four decimal fields of 1-3
// digits, each at most 255 and without a leading zero, which is the IPv4
// netip.ParseAddr accepts and the address it returns. ok is false for
// anything else (which may still be an address, or an error, for netip).
func parseDottedQuad(b []byte) (_ netip.Addr, ok bool) {
	var ip [4]byte
	i := 0
	for f := range ip {
		if f > 0 {
			if i == len(b) || b[i] != '.' {
				return netip.Addr{}, false
			}
			i++
		}
		start, v := i, 0
		for i < len(b) && i-start < 3 && b[i]-'0' <= 9 {
			v = v*10 + int(b[i]-'0')
			i++
		}
		if i == start || v > 255 || (b[start] == '0' && i-start > 1) {
			return netip.Addr{}, false
		}
		ip[f] = byte(v)
	}
	if i != len(b) {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(ip), true
}

func (d *Decoder) finish(now int64) error {
	ev := d.ev
	if !d.haveTime {
		return d.fail(DeadLetterMissingField, "ts is required")
	}
	if d.MinTime != 0 && ev.Time < d.MinTime {
		return d.fail(DeadLetterTimestampOutOfRange, "ts is before the decoder's MinTime")
	}
	t, detail, ok := ClampEventTime(ev.Time, now, d.MaxFuture)
	if !ok {
		return d.fail(DeadLetterTimestampOutOfRange, detail)
	}
	ev.Time = t
	if len(ev.Device) == 0 {
		if ev.IDMethod == IDClientIP && len(d.ipText) > 0 {
			ev.Device = ev.set(d.ipText)
		} else {
			return d.fail(DeadLetterMissingField, "device is required (or id_by client_ip with ip)")
		}
	}
	if HasControl(ev.Device) || HasControl(ev.Tenant) {
		return d.fail(DeadLetterBadField, DetailControlInIdentity)
	}
	if ev.IDMethod == IDUnknown {
		switch {
		case len(ev.APIKey) > 0:
			ev.IDMethod = IDAPIKey
		case ev.Protocol == ProtoMQTT:
			ev.IDMethod = IDMQTTClient
		}
	}
	if ev.Protocol == ProtoUnknown {
		ev.Protocol = ProtoHTTP
	}
	ev.SetRawCommand(d.method, d.path) // after "args", which the query does not override
	ev.setKeys()
	ev.ID = EventID(ev.Seq, ev.Line)
	return nil
}

// EventID derives an event id from the stream sequence of its message and its
// line in the message: seq<<20 | line. Lines beyond 2^20 in one message are
// rejected by ingest.
func EventID(seq uint64, line uint32) uint64 { return seq<<20 | uint64(line&(1<<20-1)) }

// MaxLinesPerMessage is the most lines one message may carry (see EventID).
const MaxLinesPerMessage = 1 << 20
