package command

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestMergeHalvesIsWhole: a fleet's events learned by two instances, each
// owning half of the devices, then each merging the other's contribution
// (MergeFrom into an accumulator, SetOverlay), read exactly what one
// instance learning the whole fleet reads: command and transition devices,
// class devices and first times, and adopters in the windows still held.
// Tolerance: none (sketches OR and adoption windows align exactly); a
// half without the merge reads less.
func TestMergeHalvesIsWhole(t *testing.T) {
	whole := newTestStats(1<<14, 1024)
	halves := [2]*Stats{newTestStats(1<<14, 1024), newTestStats(1<<14, 1024)}
	rng := rand.New(rand.NewPCG(7, 7))
	const devices, commands, classes = 240, 30, 3
	t0 := int64(1736121600e9)
	w := int64(AdoptWindow * 1e9)
	var ev schemas.Event
	cmds := make([]uint64, commands)
	for c := range commands {
		ev.SetCommand([]byte(fmt.Sprintf("POST /v1/x/{id}/c%d", c)))
		cmds[c] = ev.CommandID
	}
	type probe struct{ class, prev, cmd uint64 }
	var probes []probe
	end := t0
	for i := range 6000 {
		d := rng.IntN(devices)
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("d-%d", d)))
		ev.SetClass([]byte(fmt.Sprintf("class-%d", d%classes)))
		c := rng.IntN(commands)
		ev.SetCommand([]byte(fmt.Sprintf("POST /v1/x/{id}/c%d", c)))
		ev.Time = t0 + int64(i)*2e9 // 6000 events over 3.3 h: several adoption windows
		end = ev.Time
		prev := uint64(0)
		if i%3 != 0 {
			prev = cmds[rng.IntN(commands)]
		}
		whole.learn(&ev, prev)
		halves[d%2].learn(&ev, prev)
		if i%7 == 0 { // adoptions, some late
			at := ev.Time - int64(rng.IntN(2))*w
			key := detectors.PairKey(ev.ClassKey, ev.CommandID)
			whole.adopted.learn(key, ev.DeviceKey, at)
			halves[d%2].adopted.learn(key, ev.DeviceKey, at)
		}
		probes = append(probes, probe{ev.ClassKey, prev, ev.CommandID})
	}
	if n := whole.Saturated(); n != 0 {
		t.Fatalf("the whole fleet's tables saturated %d times: the test needs room", n)
	}
	before := halves[0].ClassCommandDevices(probes[0].class, probes[0].cmd, 0)
	for i, h := range halves {
		acc := newTestStats(1<<14, 1024)
		acc.classes.MergeFrom(halves[1-i].classes)
		acc.MergeFrom(halves[1-i])
		h.classes.SetOverlay(acc.classes)
		h.SetOverlay(acc)
	}
	if after := halves[0].ClassCommandDevices(probes[0].class, probes[0].cmd, 0); !(after > before) {
		t.Errorf("merging did not add the other half's devices: %v before, %v after", before, after)
	}
	probeDev := schemas.Hash2([]byte("acme"), []byte("d-0"))
	for i, h := range halves {
		for _, p := range probes {
			for _, dev := range []uint64{0, probeDev} {
				if a, b := h.ClassCommandDevices(p.class, p.cmd, dev), whole.ClassCommandDevices(p.class, p.cmd, dev); a != b {
					t.Fatalf("half %d: command devices %v, whole %v", i, a, b)
				}
				if a, b := h.ClassTransitionDevices(p.class, p.prev, p.cmd, dev), whole.ClassTransitionDevices(p.class, p.prev, p.cmd, dev); a != b {
					t.Fatalf("half %d: transition devices %v, whole %v", i, a, b)
				}
				for _, at := range []int64{end, end + w} {
					if a, b := h.ClassAdopters(p.class, p.cmd, dev, at), whole.ClassAdopters(p.class, p.cmd, dev, at); a != b {
						t.Fatalf("half %d: adopters at %d %v, whole %v", i, at, a, b)
					}
				}
			}
			if a, b := h.ClassDevices(p.class), whole.ClassDevices(p.class); a != b {
				t.Fatalf("half %d: class devices %v, whole %v", i, a, b)
			}
			if a, b := h.ClassSince(p.class), whole.ClassSince(p.class); a != b {
				t.Fatalf("half %d: class since %v, whole %v", i, a, b)
			}
		}
	}
	// The overlay is not the instance's own: its snapshot is unchanged, and
	// removing the overlay reads its own half again.
	own := halves[0].AppendSnapshot(nil)
	back := newTestStats(1<<14, 1024)
	if err := back.LoadSnapshot(own); err != nil {
		t.Fatal(err)
	}
	halves[0].SetOverlay(nil)
	halves[0].classes.SetOverlay(nil)
	if got := halves[0].ClassCommandDevices(probes[0].class, probes[0].cmd, 0); got != before {
		t.Errorf("without the overlay: %v devices, want its own %v", got, before)
	}
	if a, b := back.ClassCommandDevices(probes[0].class, probes[0].cmd, 0), before; a != b {
		t.Errorf("snapshot taken with an overlay reads %v, want its own %v (the merge must not count twice)", a, b)
	}
}

// TestAdoptionsMergeWindows: adoptions of two instances in different
// windows align on the later one.
func TestAdoptionsMergeWindows(t *testing.T) {
	w := int64(AdoptWindow * 1e9)
	t0 := 100 * w
	const key = 42
	for _, c := range []struct {
		name   string
		ta, tb int64 // the two instances' adoption times
		at     int64 // read time
		want   float64
	}{
		{"same window", t0, t0 + 1, t0 + 2, 2},
		{"b one window later", t0, t0 + w, t0 + w, 2},
		{"a one window later", t0 + w, t0, t0 + w, 2},
		{"b two windows later", t0, t0 + 2*w, t0 + 2*w, 1},
		{"read three windows on", t0, t0 + w, t0 + 3*w, 0},
	} {
		a, b := newAdoptions(1024), newAdoptions(1024)
		a.learn(key, 1<<58, c.ta)
		b.learn(key, 2<<58, c.tb)
		acc := newAdoptions(1024)
		acc.mergeFrom(b)
		a.overlay.Store(acc)
		got := a.devices(key, 63<<58, c.at)
		if got < c.want-0.5 || got > c.want+0.5 {
			t.Errorf("%s: %v devices, want %v", c.name, got, c.want)
		}
	}
}
