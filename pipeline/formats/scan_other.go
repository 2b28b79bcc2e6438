//go:build !amd64

package formats

// blockMasks returns, for the 64 bytes at p, the bit masks of its quotes,
// backslashes and brackets ('{', '}', '[', ']'): bit k for byte k.
func blockMasks(p *[64]byte) (quotes, backslashes, brackets uint64) {
	return blockMasksGeneric(p)
}
