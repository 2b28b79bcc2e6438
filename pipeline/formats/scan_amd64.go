package formats

// blockMasks returns, for the 64 bytes at p, the bit masks of its quotes,
// backslashes and brackets ('{', '}', '[', ']'): bit k for byte k.
// blockMasksGeneric says the same; this one is SSE2 assembly.
//
//go:noescape
func blockMasks(p *[64]byte) (quotes, backslashes, brackets uint64)
