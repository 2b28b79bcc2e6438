package state

import "unsafe"

// prefetch starts loading the cache lines of [p, p+n), n > 0, into the
// caches (PREFETCHT0), without waiting for them.
//
//go:noescape
func prefetch(p unsafe.Pointer, n uintptr)

// prefetchBytes starts loading b's cache lines into the caches.
func prefetchBytes(b []byte) { prefetch(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b))) }
