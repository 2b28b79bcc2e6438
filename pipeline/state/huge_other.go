//go:build !linux

package state

// adviseHuge does nothing here (see huge_linux.go).
func adviseHuge([]byte) {}
