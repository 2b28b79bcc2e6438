package volume

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestMergeRatesHalvesIsWhole: a class's devices learned by two instances,
// each owning half of them, then each merging the other's rate samples
// (MergeFrom into an accumulator, SetOverlay), give the class rate and
// burstiness one instance of the whole class gives, exactly (the bottom-1
// sample of the union is the smaller of the halves'); a half alone gives
// another rate, and a small class known only through the merge is
// established on both.
func TestMergeRatesHalvesIsWhole(t *testing.T) {
	whole := newStats()
	halves := [2]*Stats{newStats(), newStats()}
	var ev schemas.Event
	before := make([]byte, StateSize)
	const start = int64(1736121600e9)
	var classes []uint64
	for c := range 3 {
		ev.SetClass(fmt.Appendf(nil, "meter/%d", c))
		classes = append(classes, ev.ClassKey)
	}
	for d := range 90 {
		for tm := start + int64(d)*1e6; tm < start+3*3600e9; tm += int64(20+d) * 1e9 { // a rate of its own
			ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", d))
			ev.SetClass(fmt.Appendf(nil, "meter/%d", d%3))
			ev.Time = tm
			binary.LittleEndian.PutUint32(before[burstAt:], uint32(d*2654435761))
			whole.Learn(&ev, before)
			halves[d%2].Learn(&ev, before)
		}
	}
	alone := halves[0].ClassRate(classes[0])
	for i, h := range halves {
		acc := newStats()
		acc.MergeFrom(halves[1-i])
		h.SetOverlay(acc)
	}
	for _, class := range classes {
		want := whole.ClassRate(class)
		ws, wr, wl := whole.ClassBurst(class)
		if want == 0 {
			t.Fatalf("the whole class has no rate: the test's fleet is wrong")
		}
		for i, h := range halves {
			if got := h.ClassRate(class); got != want {
				t.Errorf("half %d: class rate %v, whole %v", i, got, want)
			}
			if s, r, l := h.ClassBurst(class); s != ws || r != wr || l != wl {
				t.Errorf("half %d: class burst %v %v %v, whole %v %v %v", i, s, r, l, ws, wr, wl)
			}
		}
	}
	if alone == whole.ClassRate(classes[0]) {
		t.Errorf("a half alone already gives the whole class's rate %v: the test cannot tell the merge", alone)
	}
	halves[0].SetOverlay(nil)
	if got := halves[0].ClassRate(classes[0]); got != alone {
		t.Errorf("without the overlay: rate %v, want the half's own %v", got, alone)
	}
}
