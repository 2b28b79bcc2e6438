package state

import (
	"bytes"
	"testing"
)

// TestAdviseHuge: advising huge pages for slices of every alignment and
// size around the threshold (2 huge pages) leaves their bytes as they were
// and writable.
func TestAdviseHuge(t *testing.T) {
	buf := make([]byte, 5*hugePage+4096)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	want := bytes.Clone(buf)
	for _, off := range []int{0, 1, 4095, hugePage - 1, hugePage} {
		for _, n := range []int{0, 1, 2*hugePage - 1, 2 * hugePage, 3*hugePage + 17, len(buf) - off} {
			if off+n > len(buf) {
				continue
			}
			adviseHuge(buf[off : off+n])
		}
	}
	if !bytes.Equal(buf, want) {
		t.Fatal("adviseHuge changed the bytes")
	}
	for i := range buf {
		buf[i]++
	}
	for i := range buf {
		if buf[i] != want[i]+1 {
			t.Fatalf("byte %d not written", i)
		}
	}
}
