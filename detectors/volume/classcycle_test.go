package volume

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// cycleStart is a UTC midnight (2025-01-06), in Unix ns.
const cycleStart = int64(1736121600e9)

// learnCycle teaches t a class of devices sending Poisson traffic at a mean
// gap of gap(hour of day) seconds from cycleStart+from to cycleStart+to
// (hours), in time order across devices, and returns the class key.
func learnCycleClass(t *Stats, class string, devices int, from, to float64, gap func(hour int) float64) uint64 {
	rng := rand.New(rand.NewPCG(1, uint64(devices)))
	evs := make([]schemas.Event, devices)
	next := make([]int64, devices)
	for i := range evs {
		evs[i].SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
		evs[i].SetClass([]byte(class))
		evs[i].SetCommand([]byte("POST /v1/devices/{id}/frames"))
		next[i] = cycleStart + int64(from*3600e9) + int64(i)*1e6
	}
	end := cycleStart + int64(to*3600e9)
	for {
		// The device whose next event comes first (devices are few).
		d := 0
		for i := range next {
			if next[i] < next[d] {
				d = i
			}
		}
		if next[d] >= end {
			return evs[0].ClassKey
		}
		evs[d].Time = next[d]
		t.Learn(&evs[d], nil)
		hour := int(next[d]/3600e9) % 24
		next[d] += int64(rng.ExpFloat64() * gap(hour) * 1e9)
	}
}

// at returns the time h hours after cycleStart.
func at(h float64) int64 { return cycleStart + int64(h*3600e9) }

// shopGap: a frame a minute while the shop is closed, ten a minute from
// 08:00 to 20:00.
func shopGap(hour int) float64 {
	if hour >= 8 && hour < 20 {
		return 6
	}
	return 60
}

// TestClassRamp: a class that opens at 08:00 every day ramps up then (the
// usual morning is ten times the hour before), is flat at midday and at
// night, and never ramps down; a class that never lived through a morning,
// an unknown class and a flat one have no ramp.
func TestClassRamp(t *testing.T) {
	tab := newStats()
	shop := learnCycleClass(tab, "shop/cam", 20, 0, 48, shopGap)
	checks := []struct {
		hour     float64
		min, max float64
	}{
		{48 + 8.5, 5, 10.5},  // an hour after opening: ten times the hour before, conservatively
		{48 + 8.0, 2, 10.5},  // at opening, half-way between the two hours' bins
		{48 + 14, 1, 1},      // midday: flat
		{48 + 2, 1, 1},       // night: flat
		{48 + 20.5, 1, 1},    // closing: ramps down, which is no ramp
		{48 + 7.25, 1, 1.01}, // before the opening hour's bin weighs in... almost
	}
	for _, c := range checks {
		if r := tab.ClassRamp(shop, at(c.hour), 3600); r < c.min || r > c.max {
			t.Errorf("shop at %vh: ramp %.3f, want in [%v, %v]", c.hour-48, r, c.min, c.max)
		}
	}
	if r := tab.ClassRamp(shop^1, at(56.5), 3600); r != 1 {
		t.Errorf("unknown class: ramp %v, want 1", r)
	}

	// A class seen only from 20:00 to 07:00 knows no morning yet.
	nights := newStats()
	night := learnCycleClass(nights, "shop/cam", 20, 20, 31, shopGap)
	if r := nights.ClassRamp(night, at(32.5), 3600); r != 1 {
		t.Errorf("class without a morning in its history: ramp %v at 08:30, want 1", r)
	}

	// A flat class of two devices (a frame a minute): its Poisson noise is no ramp.
	flats := newStats()
	flat := learnCycleClass(flats, "meter/x", 2, 0, 72, func(int) float64 { return 60 })
	for h := 72.0; h < 96; h += 0.5 {
		if r := flats.ClassRamp(flat, at(h), 3600); r != 1 {
			t.Errorf("flat class of 2 devices at %vh: ramp %v, want 1", h-72, r)
		}
	}

	if a := testing.AllocsPerRun(100, func() { tab.ClassRamp(shop, at(56.5), 3600) }); a != 0 {
		t.Errorf("ClassRamp: %v allocs, want 0", a)
	}
}

// TestClassRampOpenHour: what a sampled device does in the open hour (a
// flood) does not change the ramp it is judged with; it counts when the hour
// closes, as cycleBurst devices at most.
func TestClassRampOpenHour(t *testing.T) {
	run := func(flood bool) (ramp, bin float64, events int) {
		tab := newStats()
		shop := learnCycleClass(tab, "shop/cam", 20, 0, 56.25, shopGap) // up to 08:15 on day 3
		j := detectors.Slot(tab.keys, shop, false)
		var ev schemas.Event
		ev.SetCommand([]byte("POST /v1/devices/{id}/frames"))
		for i := range 20 { // a device of the rate sample
			ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
			if tab.rateKeys[rateSlot(j, ev.DeviceKey)].Load() == ev.DeviceKey|1 {
				break
			}
		}
		ev.SetClass([]byte("shop/cam")) // after the tenant: the class key is the tenant's
		if flood {                      // 300 frames a minute (30 times the hour's rate) for half an hour
			for tm := at(56.25); tm < at(56.75); tm += 200e6 {
				ev.Time = tm
				tab.Learn(&ev, nil)
				events++
			}
		}
		ramp = tab.ClassRamp(shop, at(56.5), 3600)
		ev.Time = at(57.01) // closes 08:00-09:00
		tab.Learn(&ev, nil)
		return ramp, math.Float64frombits(tab.cycleCount[cycleBin(j, at(56.5))].Load()), events
	}
	quiet, quietBin, _ := run(false)
	loud, loudBin, flood := run(true)
	if loud != quiet || quiet <= 1 {
		t.Errorf("ramp at 08:30 with a flood in the open hour %v, without %v (want equal, above 1)", loud, quiet)
	}
	// Each flood event counts dt·rate·cycleBurst: cycleBurst/30 of it.
	if added, most := loudBin-quietBin, float64(flood)*cycleBurst/30*1.01; !(added > 0) || added > most {
		t.Errorf("a flood of %d events at 30x added %v to its hour's bin: want some, at most %v", flood, added, most)
	}
}

// TestClassRampSnapshot: the cycle survives a snapshot round trip; a
// snapshot of another version is refused and leaves the statistics
// unchanged (a checkpoint then restores the detector without them: no ramp
// until the hours are seen again).
func TestClassRampSnapshot(t *testing.T) {
	tab := newStats()
	shop := learnCycleClass(tab, "shop/cam", 20, 0, 48, shopGap)
	snap := tab.AppendSnapshot(nil)
	back := newStats()
	if err := back.LoadSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if a, b := tab.ClassRamp(shop, at(56.5), 3600), back.ClassRamp(shop, at(56.5), 3600); a != b || a <= 1 {
		t.Errorf("ramp after a round trip %v, before %v (want equal, above 1)", b, a)
	}
	fresh := newStats()
	if err := fresh.LoadSnapshot(append(binary.LittleEndian.AppendUint32(nil, statsVersion+1), snap[4:]...)); err == nil {
		t.Errorf("a snapshot of version %d loaded", statsVersion+1)
	}
	if r := fresh.ClassRamp(shop, at(56.5), 3600); r != 1 {
		t.Errorf("after a refused snapshot: ramp %v, want 1 (no cycle)", r)
	}
}

// newStats returns empty volume statistics over a fresh class table.
func newStats() *Stats { return NewStats(detectors.NewClassTable(1024, 1024)) }
