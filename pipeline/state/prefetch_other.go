//go:build !amd64

package state

// prefetchSink keeps prefetchBytes' loads: a load whose value is not used
// is dropped by the compiler.
var prefetchSink byte

// prefetchBytes loads a byte of each of b's cache lines: plain loads, which
// the CPU issues without waiting for one to arrive (Go has no prefetch
// instruction; amd64 has an assembly one).
func prefetchBytes(b []byte) {
	var v byte
	for i := 0; i < len(b); i += 64 {
		v += b[i]
	}
	prefetchSink += v + b[len(b)-1]
}
