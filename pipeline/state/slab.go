package state

import "unsafe"

// hugePage is the size of a transparent huge page on amd64 and arm64 (with
// 4 KiB base pages): what Config.HugePages aligns a slab to.
const hugePage = 2 << 20

// newSlab returns a zeroed slab of n bytes and the bytes allocated for it.
// With huge and n >= hugePage, it allocates n+hugePage bytes, returns the
// hugePage-aligned n of them and advises them for huge pages (adviseHuge)
// before anything touches them: the allocation is on the Go heap, so the
// garbage collector frees it as any other (no unmapping, and a record a
// caller keeps too long stays valid memory), and its pages, fresh from the
// OS, fault in as huge pages where the kernel has them. Otherwise it is
// make([]byte, n).
func newSlab(n int, huge bool) (slab []byte, allocated int) {
	if !huge || n < hugePage {
		return make([]byte, n), n
	}
	m := make([]byte, n+hugePage)
	off := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(m))) % hugePage); r != 0 {
		off = hugePage - r
	}
	slab = m[off : off+n : off+n]
	adviseHuge(slab)
	return slab, len(m)
}
