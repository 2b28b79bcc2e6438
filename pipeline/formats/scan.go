package formats

import (
	"encoding/binary"
	"math/bits"
	"strconv"
)

// Masks of the byte lanes of a little-endian word: every byte's low seven
// bits, its high bit, its low bit.
const (
	lows  = 0x7f7f7f7f7f7f7f7f
	highs = 0x8080808080808080
	ones  = 0x0101010101010101
)

// lanesEq returns the high bit of every byte of x that equals c, exactly
// (no borrow between lanes, unlike the test in quoteOrBackslash).
func lanesEq(x uint64, c byte) uint64 {
	t := x ^ (ones * uint64(c))
	return ^((t&lows + lows) | t) & highs
}

// laneBits gathers the high bits of x's eight bytes into bits 0-7.
func laneBits(x uint64) uint64 { return (x >> 7) * 0x0102040810204080 >> 56 }

// blockMasksGeneric is blockMasks in portable Go, eight bytes at a time.
func blockMasksGeneric(p *[64]byte) (quotes, backslashes, brackets uint64) {
	for k := 0; k < 64; k += 8 {
		x := binary.LittleEndian.Uint64(p[k:])
		y := x | ones*0x20 // '[' and ']' read '{' and '}'
		quotes |= laneBits(lanesEq(x, '"')) << k
		backslashes |= laneBits(lanesEq(x, '\\')) << k
		brackets |= laneBits(lanesEq(y, '{')|lanesEq(y, '}')) << k
	}
	return quotes, backslashes, brackets
}

// skipBalanced skips the object or array at f.i without decoding it: it
// checks that brackets outside strings balance and match in kind and that
// every string ends (a backslash escapes the byte after it), and fails as
// skip does. A Kong record is mostly members nobody reads (the service and
// route objects, the response headers), and a scan that stopped at every
// quote of them was the decoder's largest cost; this one reads 64 bytes at
// a time (blockMasks), as simdjson's first stage does.
//
// Per block: the running XOR of the quote bits (prefix XOR) marks the bytes
// inside strings (a byte is inside when an odd number of quotes precede it
// or it opens one, counting the state carried in from the previous block);
// only the brackets outside strings are looked at, one by one. A block
// holding a backslash is walked byte by byte.
func (f *flattener) skipBalanced() error {
	var stack [maxNesting]byte
	var tail [64]byte
	depth := 0
	b := f.b
	i := f.i
	var inStr uint64 // all ones when the previous block ended inside a string
	for i < len(b) {
		var blk *[64]byte
		if i+64 <= len(b) {
			blk = (*[64]byte)(b[i : i+64])
		} else {
			clear(tail[copy(tail[:], b[i:]):]) // zero bytes match nothing
			blk = &tail
		}
		q, bs, br := blockMasks(blk)
		if bs != 0 {
			// Rare: byte by byte, as far as the escapes reach.
			end := min(i+64, len(b))
			str := inStr != 0
			for i < end {
				switch c := b[i]; {
				case str && c == '\\':
					i++
				case c == '"':
					str = !str
				case str:
				case c == '{' || c == '[':
					if depth == maxNesting {
						return syntaxError("nesting too deep")
					}
					stack[depth] = c
					depth++
				case c == '}' || c == ']':
					if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
						return syntaxError("unbalanced brackets at offset " + strconv.Itoa(i))
					}
					depth--
					if depth == 0 {
						f.i = i + 1
						return nil
					}
				}
				i++
			}
			inStr = 0
			if str {
				inStr = ^uint64(0)
			}
			continue
		}
		s := q ^ q<<1 // prefix XOR: bit k is the XOR of bits 0..k
		s ^= s << 2
		s ^= s << 4
		s ^= s << 8
		s ^= s << 16
		s ^= s << 32
		s ^= inStr
		for br &^= s; br != 0; br &= br - 1 {
			at := i + bits.TrailingZeros64(br)
			switch c := b[at]; c {
			case '{', '[':
				if depth == maxNesting {
					return syntaxError("nesting too deep")
				}
				stack[depth] = c
				depth++
			default:
				if depth == 0 || (c == '}') != (stack[depth-1] == '{') {
					return syntaxError("unbalanced brackets at offset " + strconv.Itoa(at))
				}
				depth--
				if depth == 0 {
					f.i = at + 1
					return nil
				}
			}
		}
		inStr = uint64(int64(s) >> 63) // the last byte's state
		i += 64
	}
	if inStr != 0 {
		return syntaxError("unterminated string")
	}
	return syntaxError("unexpected end of the record inside a nested value")
}
