package schemas

// Hash is a stable 64-bit hash (FNV-1a with a splitmix64 finalizer). It is stable
// across processes and releases: state checkpoints, shard assignment and stored
// command ids depend on it. Changing it is a migration.
func Hash(b []byte) uint64 {
	return mix(fnv(fnvOffset, b))
}

// HashString is Hash over a string, without converting it.
func HashString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return mix(h)
}

// Hash2 hashes two fields with a separator, so ("ab","c") and ("a","bc") differ.
func Hash2(a, b []byte) uint64 {
	h := fnv(fnvOffset, a)
	h ^= 0xff
	h *= fnvPrime
	return mix(fnv(h, b))
}

// HashAlt is a second hash of b, independent enough of Hash to build a 128-bit
// key from the pair (used where two devices must never share a record).
func HashAlt(b []byte) uint64 {
	return mix(fnv(fnvOffsetAlt, b) ^ 0x9e3779b97f4a7c15)
}

// Hash2Alt is HashAlt over two fields, as Hash2.
func Hash2Alt(a, b []byte) uint64 {
	h := fnv(fnvOffsetAlt, a)
	h ^= 0xff
	h *= fnvPrime
	return mix(fnv(h, b) ^ 0x9e3779b97f4a7c15)
}

const (
	fnvOffset    = 14695981039346656037
	fnvOffsetAlt = 0x84222325cbf29ce4
	fnvPrime     = 1099511628211
)

func fnv(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}

func mix(z uint64) uint64 {
	z ^= z >> 30
	z *= 0xbf58476d1ce4e5b9
	z ^= z >> 27
	z *= 0x94d049bb133111eb
	z ^= z >> 31
	return z
}
