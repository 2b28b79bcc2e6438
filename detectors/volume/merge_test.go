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

// TestMergeRatesFresherCopyWins: a class's devices moved from one instance
// to another an hour and a half into their traffic (a partition taken
// over): the previous owner keeps their samples as of the move, the new
// owner learns them on. A third instance merging both contributions, in
// either order, and the previous owner reading the new owner's through its
// overlay, read the new owner's copies: the class burstiness one instance
// of the whole traffic gives (a device's burst memory is its record's,
// which moves with the partition), and the new owner's class rate (a
// sample's decayed counts do not move: they restart with the new owner).
// (With the first copy met winning, the previous owner's copies, an hour
// and a half old, were read.)
func TestMergeRatesFresherCopyWins(t *testing.T) {
	whole, before, after := newStats(), newStats(), newStats()
	var ev schemas.Event
	rec := make([]byte, StateSize)
	const start, moved = int64(1736121600e9), int64(1736121600e9 + 5400e9)
	ev.SetClass([]byte("meter/0"))
	class := ev.ClassKey
	for d := range 40 {
		for tm := start + int64(d)*1e6; tm < start+3*3600e9; tm += int64(20+d) * 1e9 {
			ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", d))
			ev.SetClass([]byte("meter/0"))
			ev.Time = tm
			// A burst memory that changes every hour: the copies differ.
			binary.LittleEndian.PutUint32(rec[burstAt:], uint32(d*2654435761)^uint32(tm/3600e9))
			whole.Learn(&ev, rec)
			if tm < moved {
				before.Learn(&ev, rec)
			} else {
				after.Learn(&ev, rec)
			}
		}
	}
	want := after.ClassRate(class)
	ws, wr, wl := whole.ClassBurst(class)
	if gs, gr, gl := before.ClassBurst(class); gs == ws && gr == wr && gl == wl || before.ClassRate(class) == want {
		t.Fatalf("the previous owner's copies give the class burst %v %v %v and rate %v, the new owner's %v %v %v and %v: the test cannot tell the copies apart",
			gs, gr, gl, before.ClassRate(class), ws, wr, wl, want)
	}
	check := func(what string, s *Stats) {
		t.Helper()
		if got := s.ClassRate(class); got != want {
			t.Errorf("%s: class rate %v, the new owner's %v", what, got, want)
		}
		if gs, gr, gl := s.ClassBurst(class); gs != ws || gr != wr || gl != wl {
			t.Errorf("%s: class burst %v %v %v, whole %v %v %v", what, gs, gr, gl, ws, wr, wl)
		}
	}
	for _, order := range [][2]*Stats{{before, after}, {after, before}} {
		third, acc := newStats(), newStats()
		acc.MergeFrom(order[0])
		acc.MergeFrom(order[1])
		third.SetOverlay(acc)
		check(fmt.Sprintf("a third instance merging the previous owner's %s", map[bool]string{true: "first", false: "second"}[order[0] == before]), third)
	}
	acc := newStats()
	acc.MergeFrom(after)
	before.SetOverlay(acc)
	check("the previous owner reading the new owner's", before)
}
