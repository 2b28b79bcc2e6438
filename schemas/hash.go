package schemas

import (
	"encoding/binary"
	"math/bits"
)

// Hash is a stable 64-bit hash of b: 8 bytes per step, multiply-fold mixing
// (in the style of wyhash) and a splitmix64 finalizer. It is stable across
// processes and releases: state checkpoints, shard assignment and stored
// command ids depend on it, so changing it is a migration.
func Hash(b []byte) uint64 { return mix(hashBytes(seedMain, b)) }

// HashString is Hash over a string, without converting it.
func HashString(s string) uint64 {
	h := uint64(seedMain) ^ uint64(len(s))*m1
	for ; len(s) >= 8; s = s[8:] {
		w := uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
		h = fold(h ^ w)
	}
	var w uint64
	for i := 0; i < len(s); i++ {
		w |= uint64(s[i]) << (8 * i)
	}
	return mix(fold(h ^ w ^ m2))
}

// Hash2 hashes two fields, so that ("ab","c") and ("a","bc") differ.
func Hash2(a, b []byte) uint64 { return hash2Of(hash2Prefix(a), b) }

// hash2Prefix and hash2Of split Hash2 after its first field, so that keys
// sharing it hash it once: Hash2(a, b) == hash2Of(hash2Prefix(a), b).
func hash2Prefix(a []byte) uint64            { return hashBytes(seedMain, a) ^ m2 }
func hash2Of(prefix uint64, b []byte) uint64 { return mix(hashBytes(prefix, b)) }

// noTenant is hash2Prefix(nil): the prefix of ModelKeyOf.
var noTenant = hash2Prefix(nil)

// HashAlt is a second hash of b, with other seeds, so that Hash and HashAlt
// together form a 128-bit key (used where two devices must never share a record).
func HashAlt(b []byte) uint64 { return mix(hashBytes(seedAlt, b) ^ m3) }

// Hash2Alt is HashAlt over two fields, as Hash2.
func Hash2Alt(a, b []byte) uint64 { return mix(hashBytes(hashBytes(seedAlt, a)^m3, b) ^ m3) }

const (
	seedMain = 0x243f6a8885a308d3
	seedAlt  = 0x13198a2e03707344
	m1       = 0xa0761d6478bd642f
	m2       = 0xe7037ed1a0b428db
	m3       = 0x8ebc6af09c88c6e3
)

// hashBytes absorbs b into h, 8 bytes at a time; the length is mixed in so that
// trailing zero bytes count.
func hashBytes(h uint64, b []byte) uint64 {
	h ^= uint64(len(b)) * m1
	for ; len(b) >= 8; b = b[8:] {
		h = fold(h ^ binary.LittleEndian.Uint64(b))
	}
	var w uint64
	for i, c := range b {
		w |= uint64(c) << (8 * i)
	}
	return fold(h ^ w ^ m2)
}

// fold multiplies by a constant into 128 bits and xors the halves.
func fold(x uint64) uint64 {
	hi, lo := bits.Mul64(x, m1)
	return hi ^ lo
}

func mix(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}
