package state

import "syscall"

// adviseHuge advises b's pages (b hugePage-aligned) for transparent huge
// pages. It is advice: where the kernel has no THP, or its mode is never,
// it fails or does nothing, and b is used with base pages.
func adviseHuge(b []byte) { _ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) }
