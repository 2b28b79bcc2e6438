//go:build !linux

package state

// adviseHuge does nothing: transparent huge pages are advised on Linux only.
func adviseHuge([]byte) {}
