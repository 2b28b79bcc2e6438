package state

import "unsafe"

// PrefetchOf starts bringing the cache lines of *p into the CPU's caches
// without waiting for them (Table.Prefetch's instruction), for a caller's
// own fixed-size tables: a slot it will read soon, whose miss then
// overlaps the work in between instead of following it. It changes
// nothing.
func PrefetchOf[T any](p *T) {
	if n := unsafe.Sizeof(*p); n > 0 {
		prefetchBytes(unsafe.Slice((*byte)(unsafe.Pointer(p)), n))
	}
}
