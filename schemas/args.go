package schemas

import (
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
func (e *Event) SetArg(name []byte, v float64) bool {
	if !ValidArgName(name) || math.IsNaN(v) || math.IsInf(v, 0) {
		return false
	}
	k := Hash(name)
	for i := range e.NArgs {
		if e.Args[i].Key == k {
			e.Args[i].Value = v
			return true
		}
	}
	if e.NArgs == MaxArgs {
		return false
	}
	e.Args[e.NArgs] = Arg{Name: e.set(name), Key: k, Value: v}
	e.NArgs++
	return true
}

// SetQueryArgs adds the numeric parameters of the query string of a raw
// request path ("/v1/thermostats/17/set?temp=90&mode=eco" adds temp=90), the
// part the Normalizer drops from the command. Only plain decimals (an
// optional '-', digits, an optional fraction; at most 24 bytes) count, so
// parsing never fails and never allocates; names must be ValidArgName. A name
// the event already carries (from the log's "args") keeps its value.
func (e *Event) SetQueryArgs(path []byte) {
	q := -1
	for i, c := range path {
		if c == '?' {
			q = i
			break
		}
		if c == '#' {
			return
		}
	}
	if q < 0 {
		return
	}
	rest := path[q+1:]
	for len(rest) > 0 && e.NArgs < MaxArgs {
		pair := rest
		end := len(rest)
		for i, c := range rest {
			if c == '&' || c == '#' {
				pair, end = rest[:i], i
				break
			}
		}
		if end < len(rest) && rest[end] == '#' {
			rest = nil
		} else if end < len(rest) {
			rest = rest[end+1:]
		} else {
			rest = nil
		}
		for i, c := range pair {
			if c != '=' {
				continue
			}
			if v, ok := parseDecimal(pair[i+1:]); ok && !e.hasArg(pair[:i]) {
				e.SetArg(pair[:i], v)
			}
			break
		}
	}
}

func (e *Event) hasArg(name []byte) bool {
	k := Hash(name)
	for i := range e.NArgs {
		if e.Args[i].Key == k {
			return true
		}
	}
	return false
}

// parseDecimal parses a plain decimal ("-12.5"), rejecting anything else.
func parseDecimal(b []byte) (float64, bool) {
	if len(b) == 0 || len(b) > maxQueryNumber {
		return 0, false
	}
	i := 0
	if b[0] == '-' {
		i++
	}
	digits, dot := 0, false
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.' && !dot:
			dot = true
		default:
			return 0, false
		}
	}
	if digits == 0 || b[len(b)-1] == '.' {
		return 0, false
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

// args decodes the "args" member, a JSON object whose value starts at
// d.sc.b[start:] (the scanner has already checked its brackets). Members with
// numeric values and a ValidArgName are kept (the first MaxArgs distinct
// names); other members (strings, booleans, nested values, other names) are
// ignored, so producers may log non-numeric arguments. A value that is not an
// object is a bad_field; a syntax error inside it is malformed_json.
func (d *Decoder) args(start, end int) {
	s := &d.argSc
	s.b, s.i, s.scratch = d.sc.b[:end], start, s.scratch[:0]
	if s.b[s.i] != '{' {
		d.failf(ErrReasonBadField, "args must be an object of numbers")
		return
	}
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		return
	}
	var v jsonValue
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			d.failf(ErrReasonMalformed, "args: expected a string key")
			return
		}
		key, err := s.str(true)
		if err == nil {
			s.ws()
			if s.i >= len(s.b) || s.b[s.i] != ':' {
				err = scanError("expected ':'")
			} else {
				s.i++
				s.ws()
				err = s.value(&v)
			}
		}
		if err != nil {
			d.failf(ErrReasonMalformed, "args: %v", err)
			return
		}
		if v.kind == jsonNumber {
			d.ev.SetArg(key, v.num)
		}
		s.ws()
		if s.i >= len(s.b) {
			d.failf(ErrReasonMalformed, "args: unexpected end of the object")
			return
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			return
		default:
			d.failf(ErrReasonMalformed, "args: expected ',' or '}'")
			return
		}
	}
}

// valueStart returns the offset in b of the value of the member that starts
// after offset from (just after the previous member's value, or 0 for the
// first member): past ',' or '{', the key and ':'. The scanner has already
// read that member, so its syntax is known to be valid.
func valueStart(b []byte, from int) int {
	i := from
	for i < len(b) && b[i] != '"' {
		i++ // whitespace, ',' or '{'
	}
	for i++; i < len(b) && b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	for i++; i < len(b) && b[i] != ':'; i++ {
	}
	for i++; i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'); i++ {
	}
	return i
}
