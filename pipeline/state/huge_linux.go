package state

import (
	"syscall"
	"unsafe"
)

// hugePage is the size of a transparent huge page on linux/amd64 and arm64.
const hugePage = 2 << 20

// adviseHuge asks the kernel to back the whole 2 MiB pages of b with
// transparent huge pages (madvise MADV_HUGEPAGE; where THP is "madvise",
// only advised memory gets them): a record at random in a slab of many
// megabytes then costs a cache miss without a TLB miss and its page walk.
// Advice only: an error (THP disabled, an old kernel) leaves b as it was.
func adviseHuge(b []byte) {
	if len(b) < 2*hugePage {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	start := (p + hugePage - 1) &^ (hugePage - 1)
	end := (p + uintptr(len(b))) &^ (hugePage - 1)
	if end <= start {
		return
	}
	_ = syscall.Madvise(b[start-p:end-p], syscall.MADV_HUGEPAGE)
}
