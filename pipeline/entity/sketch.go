package entity

import (
	"math"
	"math/bits"
)

// DistinctBytes is the size of a Distinct sketch in a record.
const DistinctBytes = 32

// distinctBits is the number of bits of a Distinct sketch.
const distinctBits = DistinctBytes * 8

// distinctMax is the largest count a full sketch reports (m ln m).
var distinctMax = distinctBits * math.Log(distinctBits)

// DistinctAdd sets the bit of the 64-bit hash h in the linear-counting
// sketch s (DistinctBytes long) and reports whether it was clear. h must be
// well mixed (a device key is). It does not allocate.
func DistinctAdd(s []byte, h uint64) bool {
	i := (h * 0x9e3779b97f4a7c15) >> (64 - 8) // 0..255
	b := &s[i>>3]
	m := byte(1) << (i & 7)
	if *b&m != 0 {
		return false
	}
	*b |= m
	return true
}

// DistinctCount estimates the distinct hashes added to s (linear counting:
// -m ln(zeros/m) for m bits). The standard error is under 10% up to a few
// hundred; a full sketch reports about 1,420. It does not allocate.
func DistinctCount(s []byte) float64 {
	ones := 0
	for i := 0; i < DistinctBytes; i += 8 {
		ones += bits.OnesCount64(le64(s[i:]))
	}
	zeros := distinctBits - ones
	switch {
	case ones == 0:
		return 0
	case zeros == 0:
		return distinctMax
	}
	return -distinctBits * math.Log(float64(zeros)/distinctBits)
}

// bitmap64Add sets the bit of h in the 64-bit bitmap at s[:8] (a small
// distinct count, of a prefix's addresses) and returns the bits set.
func bitmap64Add(s []byte, h uint64) int {
	v := le64(s) | 1<<((h*0x9e3779b97f4a7c15)>>58)
	put64(s, v)
	return bits.OnesCount64(v)
}

func le64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func put64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	b[4], b[5], b[6], b[7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
}
