package formats

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// flattener parses one JSON object into a flat list of scalar members, each
// named by its dotted path ("request.headers.user-agent"). Arrays are validated
// and skipped (no gateway field the decoders need is inside one); objects deeper
// than maxFlatDepth are skipped too. It allocates nothing once its buffers have
// grown to the size of the largest record seen.
type flattener struct {
	toks   []token
	paths  []byte // every token's path, back to back
	vals   []byte // unescaped string values
	prefix []byte // path of the object being scanned, with a trailing '.'
	b      []byte
	i      int
}

type kind uint8

const (
	kString kind = iota + 1
	kNumber
	kBool
	kNull
)

// token is one scalar member. path and val point into the flattener's buffers
// or the line, valid until the next parse.
type token struct {
	path []byte
	val  []byte // string contents, number text, or the literal
	num  float64
	kind kind
}

const (
	maxFlatDepth = 4  // object levels flattened into tokens
	maxNesting   = 64 // bracket levels accepted at all
)

type syntaxError string

func (e syntaxError) Error() string { return string(e) }

var errNotObject = syntaxError("the record is not a JSON object")

// parse flattens line, which must hold exactly one JSON object. A nil want
// flattens every member; else only the members whose normalized path is in
// want (and the objects on the way to them) become tokens, and every other
// member is skipped by skipValue: the record must still be well-formed, up to
// the scalars inside skipped members, which are not converted.
func (f *flattener) parse(line []byte, want *fieldNode) error {
	f.toks, f.paths, f.vals, f.prefix = f.toks[:0], f.paths[:0], f.vals[:0], f.prefix[:0]
	f.b, f.i = line, 0
	f.ws()
	if f.i >= len(f.b) || f.b[f.i] != '{' {
		if f.i < len(f.b) && (f.b[f.i] == '[' || f.b[f.i] == '"' || f.b[f.i] == '-' || (f.b[f.i] >= '0' && f.b[f.i] <= '9') || f.b[f.i] == 't' || f.b[f.i] == 'f' || f.b[f.i] == 'n') {
			return errNotObject
		}
		return syntaxError("expected '{' at the start of the record")
	}
	if err := f.object(1, want); err != nil {
		return err
	}
	f.ws()
	if f.i != len(f.b) {
		return syntaxError("unexpected data after the object at offset " + strconv.Itoa(f.i))
	}
	return nil
}

func (f *flattener) ws() {
	if f.i < len(f.b) && f.b[f.i] > ' ' { // the common case: no whitespace
		return
	}
	for f.i < len(f.b) {
		switch f.b[f.i] {
		case ' ', '\t', '\r', '\n':
			f.i++
		default:
			return
		}
	}
}

// object scans an object at f.i ('{') whose members are named f.prefix+key;
// want is as for parse, the node of this object.
func (f *flattener) object(depth int, want *fieldNode) error {
	f.i++ // '{'
	f.ws()
	if f.i < len(f.b) && f.b[f.i] == '}' {
		f.i++
		return nil
	}
	for {
		f.ws()
		if f.i >= len(f.b) || f.b[f.i] != '"' {
			return syntaxError("expected a string key at offset " + strconv.Itoa(f.i))
		}
		plen := len(f.prefix)
		key, err := f.str()
		if err != nil {
			return err
		}
		f.ws()
		if f.i >= len(f.b) || f.b[f.i] != ':' {
			return syntaxError("expected ':' at offset " + strconv.Itoa(f.i))
		}
		f.i++
		f.ws()
		switch {
		case want == nil:
			f.prefix = append(f.prefix, key...)
			err = f.value(depth)
		case f.i >= len(f.b):
			return syntaxError("unexpected end of the record, expected a value")
		default:
			w, c := want.child(key), f.b[f.i]
			switch {
			case w == nil: // not wanted: its name is never needed
				err = f.skipValue()
			case c == '{' && depth < maxFlatDepth && len(w.children) > 0:
				f.prefix = append(append(f.prefix, key...), '.')
				err = f.object(depth+1, w)
			case c != '{' && c != '[' && w.leaf:
				f.prefix = append(f.prefix, key...)
				err = f.value(depth)
			default:
				err = f.skipValue()
			}
		}
		if err != nil {
			return err
		}
		f.prefix = f.prefix[:plen]
		f.ws()
		if f.i >= len(f.b) {
			return syntaxError("unexpected end of the record inside an object")
		}
		switch f.b[f.i] {
		case ',':
			f.i++
		case '}':
			f.i++
			return nil
		default:
			return syntaxError("expected ',' or '}' at offset " + strconv.Itoa(f.i))
		}
	}
}

// value scans the value of the member named f.prefix.
func (f *flattener) value(depth int) error {
	if f.i >= len(f.b) {
		return syntaxError("unexpected end of the record, expected a value")
	}
	switch c := f.b[f.i]; {
	case c == '"':
		s, err := f.str()
		if err != nil {
			return err
		}
		f.emit(kString, s, 0)
	case c == '-' || (c >= '0' && c <= '9'):
		start := f.i
		for f.i < len(f.b) && isNumberByte(f.b[f.i]) {
			f.i++
		}
		raw := f.b[start:f.i]
		n, ok := smallUint(raw)
		if !ok {
			var err error
			if n, err = strconv.ParseFloat(unsafe.String(&raw[0], len(raw)), 64); err != nil {
				return syntaxError("invalid number at offset " + strconv.Itoa(start))
			}
		}
		f.emit(kNumber, raw, n)
	case c == 't':
		return f.lit("true", kBool)
	case c == 'f':
		return f.lit("false", kBool)
	case c == 'n':
		return f.lit("null", kNull)
	case c == '{':
		if depth < maxFlatDepth {
			f.prefix = append(f.prefix, '.')
			return f.object(depth+1, nil)
		}
		return f.skip()
	case c == '[':
		return f.skip()
	default:
		return syntaxError("unexpected character at offset " + strconv.Itoa(f.i))
	}
	return nil
}

// emit appends the token named f.prefix. It fills the new element in place:
// building a token and copying it cost a stalled 64-byte copy per token
// (the copy reads back what was just written in narrower stores).
func (f *flattener) emit(k kind, val []byte, num float64) {
	start := len(f.paths)
	f.paths = append(f.paths, f.prefix...)
	if len(f.toks) == cap(f.toks) {
		f.toks = append(f.toks, token{})
	} else {
		f.toks = f.toks[:len(f.toks)+1]
	}
	t := &f.toks[len(f.toks)-1]
	t.path = f.paths[start:len(f.paths):len(f.paths)]
	t.val, t.num, t.kind = val, num, k
}

func (f *flattener) lit(word string, k kind) error {
	if len(f.b)-f.i < len(word) || string(f.b[f.i:f.i+len(word)]) != word {
		return syntaxError("invalid literal at offset " + strconv.Itoa(f.i))
	}
	f.emit(k, f.b[f.i:f.i+len(word)], 0)
	f.i += len(word)
	return nil
}

// skip skips a balanced object or array at f.i, checking brackets and
// strings (unescaped, so their escapes are checked too).
func (f *flattener) skip() error {
	var stack [maxNesting]byte
	depth := 0
	for f.i < len(f.b) {
		switch c := f.b[f.i]; c {
		case '{', '[':
			if depth == maxNesting {
				return syntaxError("nesting too deep")
			}
			stack[depth] = c
			depth++
			f.i++
		case '}', ']':
			if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
				return syntaxError("unbalanced brackets at offset " + strconv.Itoa(f.i))
			}
			depth--
			f.i++
			if depth == 0 {
				return nil
			}
		case '"':
			if _, err := f.str(); err != nil {
				return err
			}
		default:
			f.i++
		}
	}
	return syntaxError("unexpected end of the record inside a nested value")
}

// str scans a string at f.i (the opening quote). Without escapes it returns a
// slice of the line, else the unescaped copy in f.vals.
func (f *flattener) str() ([]byte, error) {
	f.i++
	start := f.i
	var i int
	if m := firstLanes(f.b, start); m != 0 {
		i = start + bits.TrailingZeros64(m)>>3
	} else {
		i = quoteOrBackslash(f.b, start)
	}
	switch {
	case i == len(f.b):
		return nil, syntaxError("unterminated string")
	case f.b[i] == '"':
		f.i = i + 1
		return f.b[start:i], nil
	}
	f.i = i
	return f.unescape(start)
}

// quoteOrBackslash returns the index of the first '"' or '\\' in b at or
// after i, or len(b). It tests eight bytes at a time: most of a gateway's
// JSON record is string contents, and a byte loop over them was the decoders'
// largest cost.
func quoteOrBackslash(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		if m := quoteOrBackslashLanes(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
	}
	for ; i < len(b); i++ {
		if b[i] == '"' || b[i] == '\\' {
			return i
		}
	}
	return len(b)
}

// quoteOrBackslashLanes flags the lanes of the little-endian word x that may
// hold '"' or '\\': a byte of q or s is zero where x holds one. The zero-byte
// test can also flag a byte above a zero byte (the borrow), never one below
// it, so the lowest flag is exact.
func quoteOrBackslashLanes(x uint64) uint64 {
	q, s := x^(ones*'"'), x^(ones*'\\')
	return ((q-ones)&^q | (s-ones)&^s) & highs
}

// firstLanes is quoteOrBackslashLanes of the eight bytes of b at i, or 0
// when fewer remain. Most keys and many values end within them, so testing
// them where the call inlines saves the call to quoteOrBackslash.
func firstLanes(b []byte, i int) uint64 {
	if i+8 > len(b) {
		return 0
	}
	return quoteOrBackslashLanes(binary.LittleEndian.Uint64(b[i:]))
}

func (f *flattener) unescape(start int) ([]byte, error) {
	from := len(f.vals)
	f.vals = append(f.vals, f.b[start:f.i]...)
	for f.i < len(f.b) {
		c := f.b[f.i]
		if c == '"' {
			f.i++
			return f.vals[from:len(f.vals):len(f.vals)], nil
		}
		if c != '\\' {
			f.vals = append(f.vals, c)
			f.i++
			continue
		}
		if f.i+1 >= len(f.b) {
			break
		}
		e := f.b[f.i+1]
		f.i += 2
		switch e {
		case '"', '\\', '/':
			f.vals = append(f.vals, e)
		case 'b':
			f.vals = append(f.vals, '\b')
		case 'f':
			f.vals = append(f.vals, '\f')
		case 'n':
			f.vals = append(f.vals, '\n')
		case 'r':
			f.vals = append(f.vals, '\r')
		case 't':
			f.vals = append(f.vals, '\t')
		case 'u':
			if len(f.b)-f.i < 4 {
				return nil, syntaxError("invalid \\u escape")
			}
			r, err := strconv.ParseUint(unsafe.String(&f.b[f.i], 4), 16, 32)
			if err != nil {
				return nil, syntaxError("invalid \\u escape")
			}
			f.i += 4
			f.vals = utf8.AppendRune(f.vals, rune(r)) // lone surrogates become U+FFFD
		case 'x':
			// NGINX escape=default writes \xHH; accept it.
			if len(f.b)-f.i < 2 {
				return nil, syntaxError("invalid \\x escape")
			}
			r, err := strconv.ParseUint(unsafe.String(&f.b[f.i], 2), 16, 8)
			if err != nil {
				return nil, syntaxError("invalid \\x escape")
			}
			f.i += 2
			f.vals = append(f.vals, byte(r))
		default:
			return nil, syntaxError("invalid escape in a string")
		}
	}
	return nil, syntaxError("unterminated string")
}

// smallUint returns the value of raw when it is 1 to 15 decimal digits (the
// common case: times, sizes, statuses), which ParseFloat would give exactly;
// ok is false for anything else.
func smallUint(raw []byte) (float64, bool) {
	if len(raw) == 0 || len(raw) > 15 {
		return 0, false
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return float64(n), true
}

func isNumberByte(c byte) bool {
	return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// splitArray appends the top-level elements of the JSON array in b to dst; ok
// is false when b is not a well-formed array (then dst is returned unchanged).
func splitArray(dst [][]byte, b []byte) ([][]byte, bool) {
	f := flattener{b: b}
	f.ws()
	if f.i >= len(b) || b[f.i] != '[' {
		return dst, false
	}
	n := len(dst)
	f.i++
	f.ws()
	if f.i < len(b) && b[f.i] == ']' {
		f.i++
		f.ws()
		return dst, f.i == len(b)
	}
	for {
		f.ws()
		start := f.i
		if f.i >= len(b) {
			return dst[:n], false
		}
		var err error
		switch b[f.i] {
		case '{', '[':
			err = f.skip()
		case '"':
			_, err = f.str()
		default:
			for f.i < len(b) && b[f.i] != ',' && b[f.i] != ']' && b[f.i] != ' ' && b[f.i] != '\n' {
				f.i++
			}
		}
		if err != nil || f.i == start {
			return dst[:n], false
		}
		dst = append(dst, b[start:f.i])
		f.ws()
		if f.i >= len(b) {
			return dst[:n], false
		}
		switch b[f.i] {
		case ',':
			f.i++
		case ']':
			f.i++
			f.ws()
			if f.i != len(b) {
				return dst[:n], false
			}
			return dst, true
		default:
			return dst[:n], false
		}
	}
}
