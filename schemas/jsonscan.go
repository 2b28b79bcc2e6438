package schemas

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// A minimal, allocation-free scanner for the canonical encoding: one flat JSON
// object per line whose values the decoder cares about are strings, numbers,
// booleans and null. Nested objects and arrays (producers' own fields) are
// validated for balance only and returned whole (the decoder scans "args"
// again). Strings with escapes are unescaped into a scratch buffer owned by
// the scanner; the returned bytes are valid until the next string is read.

type jsonKind uint8

const (
	jsonString jsonKind = iota + 1
	jsonNumber
	jsonBool
	jsonNull
	jsonNested
)

type jsonValue struct {
	kind jsonKind
	raw  []byte // string contents (unescaped), number text, or a nested value's bytes
	num  float64
}

type scanError string

func (e scanError) Error() string { return string(e) }

const maxNesting = 64

type scanner struct {
	b       []byte
	i       int
	scratch []byte // unescaped string values; reset per object
	keyBuf  []byte
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		c := s.b[s.i]
		if c > ' ' { // the common case in compact JSON: one comparison
			return
		}
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return
		}
		s.i++
	}
}

// object scans one object, calling d.field for each member. It returns a
// scanError describing the first syntax error.
func (s *scanner) object(line []byte, d *Decoder) error {
	s.b, s.i, s.scratch = line, 0, s.scratch[:0]
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		if s.i < len(s.b) && (s.b[s.i] == '[' || s.b[s.i] == '"' || s.b[s.i] == '-' || (s.b[s.i] >= '0' && s.b[s.i] <= '9') || s.b[s.i] == 't' || s.b[s.i] == 'f' || s.b[s.i] == 'n') {
			return errNotObject
		}
		return scanError("expected '{' at the start of the line")
	}
	if err := s.members(d, false); err != nil {
		return err
	}
	return s.end()
}

// members scans the members of the object whose '{' is at s.i, up to its
// '}', calling d.field for each, or d.arg for those of the "args" object (a
// direct call: a func value would make the decoder escape and allocate).
func (s *scanner) members(d *Decoder, args bool) error {
	s.i++
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	var v jsonValue
	for {
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != '"' {
			return scanError("expected a string key at offset " + strconv.Itoa(s.i))
		}
		key, err := s.str(true)
		if err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return scanError("expected ':' at offset " + strconv.Itoa(s.i))
		}
		s.i++
		s.ws()
		if err := s.value(&v); err != nil {
			return err
		}
		if args {
			d.arg(key, &v)
		} else {
			d.field(key, &v)
		}
		s.ws()
		if s.i >= len(s.b) {
			return scanError("unexpected end of line inside the object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return scanError("expected ',' or '}' at offset " + strconv.Itoa(s.i))
		}
	}
}

var errNotObject = scanError("not an object")

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return scanError("unexpected data after the object at offset " + strconv.Itoa(s.i))
	}
	return nil
}

func (s *scanner) value(v *jsonValue) error {
	if s.i >= len(s.b) {
		return scanError("unexpected end of line, expected a value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		b, err := s.str(false)
		*v = jsonValue{kind: jsonString, raw: b}
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		// Fast path: a plain integer, parsed while scanning (int64, whose
		// conversion to float64 is one instruction, where uint64's is not).
		start := s.i
		var n int64
		for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' && s.i-start < 15 {
			n = n*10 + int64(s.b[s.i]-'0')
			s.i++
		}
		if s.i > start && (s.i == len(s.b) || !isNumberByte(s.b[s.i])) {
			*v = jsonValue{kind: jsonNumber, raw: s.b[start:s.i], num: float64(n)}
			return nil
		}
		// And a plain decimal fraction ("18.4"), 15 digits in all: n and
		// 10^k are exact in a float64, so their quotient, rounded once, is
		// what strconv.ParseFloat returns (its own exact fast path).
		if s.i > start && s.i < len(s.b) && s.b[s.i] == '.' {
			j, k := s.i+1, 0
			for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' && j-start-1 < 15 {
				n = n*10 + int64(s.b[j]-'0')
				j, k = j+1, k+1
			}
			if k > 0 && (j == len(s.b) || !isNumberByte(s.b[j])) {
				s.i = j
				*v = jsonValue{kind: jsonNumber, raw: s.b[start:s.i], num: float64(n) / pow10[k]}
				return nil
			}
		}
		for s.i < len(s.b) && isNumberByte(s.b[s.i]) {
			s.i++
		}
		raw := s.b[start:s.i]
		f, err := strconv.ParseFloat(unsafe.String(&raw[0], len(raw)), 64)
		if err != nil {
			return scanError("invalid number at offset " + strconv.Itoa(start))
		}
		*v = jsonValue{kind: jsonNumber, raw: raw, num: f}
		return nil
	case c == 't':
		return s.lit("true", v, jsonBool)
	case c == 'f':
		return s.lit("false", v, jsonBool)
	case c == 'n':
		return s.lit("null", v, jsonNull)
	case c == '{' || c == '[':
		start := s.i
		err := s.skipNested()
		*v = jsonValue{kind: jsonNested, raw: s.b[start:s.i]}
		return err
	default:
		return scanError("unexpected character at offset " + strconv.Itoa(s.i))
	}
}

func (s *scanner) lit(word string, v *jsonValue, k jsonKind) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return scanError("invalid literal at offset " + strconv.Itoa(s.i))
	}
	*v = jsonValue{kind: k, raw: s.b[s.i : s.i+len(word)]}
	s.i += len(word)
	return nil
}

// skipNested skips a balanced object or array, checking brackets and strings.
func (s *scanner) skipNested() error {
	var stack [maxNesting]byte
	depth := 0
	for s.i < len(s.b) {
		switch c := s.b[s.i]; c {
		case '{', '[':
			if depth == maxNesting {
				return scanError("nesting too deep")
			}
			stack[depth] = c
			depth++
			s.i++
		case '}', ']':
			if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
				return scanError("unbalanced brackets at offset " + strconv.Itoa(s.i))
			}
			depth--
			s.i++
			if depth == 0 {
				return nil
			}
		case '"':
			// A string inside: scanned as a value, so that it cannot
			// overwrite the key this nested value belongs to.
			if _, err := s.str(false); err != nil {
				return err
			}
		default:
			s.i++
		}
	}
	return scanError("unexpected end of line inside a nested value")
}

// str scans a string starting at the opening quote. Without escapes it returns
// a slice of the line; with escapes it unescapes into scratch (or keyBuf for
// keys, so that a key stays valid while its value is scanned).
//
// Raw control characters inside strings are tolerated (the decoder is lenient
// where leniency loses nothing); invalid UTF-8 is rejected before scanning.
func (s *scanner) str(isKey bool) ([]byte, error) {
	s.i++ // opening quote
	start := s.i
	// One pass for both the closing quote and a backslash, eight bytes at a
	// time (SWAR), then byte by byte for the tail.
	b := s.b
	i := start
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		if m := zeroByte(w^(ones*'"')) | zeroByte(w^(ones*'\\')); m != 0 {
			i += bits.TrailingZeros64(m) / 8 // the lowest flag is always a true match
			break
		}
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			s.i = i + 1
			return b[start:i], nil
		case '\\':
			s.i = i
			return s.unescape(start, isKey)
		}
	}
	return nil, scanError("unterminated string")
}

const ones = 0x0101010101010101

// zeroByte flags (high bit) the zero bytes of x; flags above a true zero byte
// may be false positives, the lowest flag never is.
func zeroByte(x uint64) uint64 { return (x - ones) &^ x & (ones * 0x80) }

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// unescape continues a string at its first backslash (s.i), copying what came
// before it from start.
func (s *scanner) unescape(start int, isKey bool) ([]byte, error) {
	buf := &s.scratch
	if isKey {
		buf = &s.keyBuf
		s.keyBuf = s.keyBuf[:0]
	}
	from := len(*buf)
	*buf = append(*buf, s.b[start:s.i]...)
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return (*buf)[from:], nil
		case c != '\\':
			*buf = append(*buf, c)
			s.i++
			continue
		}
		if s.i+1 >= len(s.b) {
			break
		}
		e := s.b[s.i+1]
		s.i += 2
		switch e {
		case '"', '\\', '/':
			*buf = append(*buf, e)
		case 'b':
			*buf = append(*buf, '\b')
		case 'f':
			*buf = append(*buf, '\f')
		case 'n':
			*buf = append(*buf, '\n')
		case 'r':
			*buf = append(*buf, '\r')
		case 't':
			*buf = append(*buf, '\t')
		case 'u':
			r, ok := s.hex4()
			if !ok {
				return nil, scanError("invalid \\u escape")
			}
			if r >= 0xd800 && r < 0xdc00 && s.i+1 < len(s.b) && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
				s.i += 2
				r2, ok := s.hex4()
				if !ok {
					return nil, scanError("invalid \\u escape")
				}
				if r2 >= 0xdc00 && r2 < 0xe000 {
					r = 0x10000 + (r-0xd800)<<10 + (r2 - 0xdc00)
				} else {
					*buf = utf8.AppendRune(*buf, utf8.RuneError)
					r = r2
				}
			}
			*buf = utf8.AppendRune(*buf, r)
		default:
			return nil, scanError("invalid escape in a string")
		}
	}
	return nil, scanError("unterminated string")
}

func (s *scanner) hex4() (rune, bool) {
	if len(s.b)-s.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s.b[s.i : s.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			r |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	s.i += 4
	return r, true
}

// pow10 holds the powers of ten a float64 represents exactly that the
// scanner's decimal fast path divides by.
var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15}
