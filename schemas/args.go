package schemas

import (
	"bytes"
	"math"
	"strconv"
	"unsafe"
)

// MaxArgs bounds the numeric arguments an Event carries; later ones are
// dropped. A fixed array keeps the Event free of allocations.
const MaxArgs = 4

// MaxArgName is the longest argument name kept.
const MaxArgName = 32

// maxQueryNumber bounds the length of a query-string number: a plain decimal
// that short always parses (no range error, which would allocate).
const maxQueryNumber = 24

// Arg is one numeric argument of a command ("temp" = 90 in
// "POST /v1/thermostats/17/set?temp=90").
type Arg struct {
	// Name points into the Event's arena, like the Event's other byte fields.
	Name []byte
	// Key is Hash(Name): what class models key the argument by.
	Key   uint64
	Value float64
}

// ArgList returns the event's numeric arguments, in the order they were set.
// The slice aliases the Event.
func (e *Event) ArgList() []Arg { return e.Args[:e.NArgs] }

// ValidArgName reports whether name can name an argument: 1 to MaxArgName
// bytes of ASCII letters, digits, '_', '-' and '.'. Other names (percent-
// encoded, nested, free text) are ignored by the decoders.
func ValidArgName(name []byte) bool {
	if len(name) == 0 || len(name) > MaxArgName {
		return false
	}
	for _, c := range name {
		if !isAlpha(c) && (c < '0' || c > '9') && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// SetArg sets the argument name to v, replacing the value of an argument of
// the same name. It reports false, and changes nothing, when name is not
// ValidArgName, v is not finite, or the event already carries MaxArgs other
// arguments.
func (e *Event) SetArg(name []byte, v float64) bool { return e.addArg(name, v, true) }

// addArg is SetArg, except that without replace an argument of the same name
// keeps its value (and addArg reports false).
func (e *Event) addArg(name []byte, v float64, replace bool) bool {
	if !ValidArgName(name) || math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	k := Hash(name)
	for i := range e.NArgs {
		if e.Args[i].Key == k {
			if replace {
				e.Args[i].Value = v
			}
			return replace
		}
	}
	if e.NArgs == MaxArgs {
		return false
	}
	e.Args[e.NArgs] = Arg{Name: e.set(name), Key: k, Value: v}
	e.NArgs++
	return true
}

// addQueryArgs adds the numeric parameters of query, the part of a raw
// request path after '?' that the Normalizer drops ("temp=90&mode=eco" adds
// temp=90). Only plain decimals (an optional '-', digits, an optional
// fraction; at most 24 bytes) count, so parsing never fails and never
// allocates; names must be ValidArgName. A name the event already carries
// (from the log's "args") keeps its value.
func (e *Event) addQueryArgs(query []byte) {
	if h := bytes.IndexByte(query, '#'); h >= 0 {
		query = query[:h]
	}
	for len(query) > 0 && e.NArgs < MaxArgs {
		var pair []byte
		pair, query, _ = bytes.Cut(query, []byte{'&'})
		if name, num, ok := bytes.Cut(pair, []byte{'='}); ok {
			if v, ok := parseDecimal(num); ok {
				e.addArg(name, v, false)
			}
		}
	}
}

// parseDecimal parses a plain decimal ("-12.5"), rejecting anything else.
func parseDecimal(b []byte) (float64, bool) {
	if len(b) == 0 || len(b) > maxQueryNumber {
		return 0, false
	}
	neg := b[0] == '-'
	i := 0
	if neg {
		i++
	}
	var n uint64 // the digits, exact while there are at most 15 of them
	digits, dot := 0, false
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c >= '0' && c <= '9':
			digits++
			n = n*10 + uint64(c-'0')
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 || b[len(b)-1] == '.' {
		return 0, false
	}
	if !dot && digits <= 15 {
		v := float64(n)
		if neg {
			v = -v
		}
		return v, true
	}
	v, err := strconv.ParseFloat(unsafe.String(&b[0], len(b)), 64)
	return v, err == nil
}

// appendArgs appends the "args" member of the canonical encoding.
func appendArgs(dst []byte, ev *Event) []byte {
	if ev.NArgs == 0 {
		return dst
	}
	dst = append(dst, `,"args":{`...)
	for i, a := range ev.ArgList() {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendQuoted(dst, a.Name)
		dst = append(dst, ':')
		dst = strconv.AppendFloat(dst, a.Value, 'g', -1, 64)
	}
	return append(dst, '}')
}

// args decodes the "args" member, the JSON object raw (the scanner has
// already checked its brackets). Members with numeric values and a
// ValidArgName are kept (the first MaxArgs distinct names); other members
// (strings, booleans, nested values, other names) are ignored, so producers
// may log non-numeric arguments. A value that is not an object is a
// bad_field; a syntax error inside it is malformed_json.
func (d *Decoder) args(raw []byte) {
	if raw[0] != '{' {
		d.failf(DeadLetterBadField, "args must be an object of numbers")
		return
	}
	s := &d.argSc
	s.b, s.i, s.scratch = raw, 0, s.scratch[:0]
	if err := s.members(d, true); err != nil {
		d.failf(DeadLetterMalformedJSON, "args: %v", err)
	}
}

// arg handles one member of the "args" object.
func (d *Decoder) arg(key []byte, v *jsonValue) {
	if v.kind == jsonNumber {
		d.ev.SetArg(key, v.num)
	}
}
