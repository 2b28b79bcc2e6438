package detectors

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// paramEvent is a set-point command of device i of class thermostat/x.
func paramEvent(ev *schemas.Event, device int, temp float64) {
	ev.Reset()
	ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("t-%d", device)))
	ev.SetClass([]byte("thermostat/x"))
	ev.SetCommand([]byte("POST /v1/thermostats/{id}/set"))
	ev.SetArg([]byte("temp"), temp)
}

// teach makes n events of devices 0..devices-1 with temperatures in [lo, hi).
func teach(t *ParamTable, rng *rand.Rand, n, devices int, lo, hi float64) *schemas.Event {
	var ev schemas.Event
	for i := range n {
		paramEvent(&ev, i%devices, lo+rng.Float64()*(hi-lo))
		t.Learn(&ev)
	}
	return &ev
}

func paramRange(t *ParamTable, ev *schemas.Event) ParamRange {
	return t.ClassParam(ev.ClassKey, ev.CommandID, ev.Args[0].Key)
}

func TestParamRangeLearnsAndJudges(t *testing.T) {
	tab := NewParamTable(1024)
	rng := rand.New(rand.NewPCG(1, 2))
	ev := teach(tab, rng, ParamMinEvents-1, 8, 19, 23)
	if r := paramRange(tab, ev); r.Ready() {
		t.Fatalf("ready after %d events: %+v", r.Events, r)
	}
	teach(tab, rng, 500, 8, 19, 23)
	r := paramRange(tab, ev)
	if !r.Ready() || math.Abs(r.Center-21) > 0.5 || r.Scale < 0.5 || r.Scale > 2 {
		t.Fatalf("range of U(19,23) learned as %+v", r)
	}
	for _, x := range []float64{19, 21, 23, 25} {
		if z, _ := r.Judge(x); z != 0 {
			t.Errorf("%v judged out of range (z=%.1f) in %+v", x, z, r)
		}
	}
	for _, x := range []float64{90, -40} {
		z, bound := r.Judge(x)
		if z <= ParamK || (x > r.Center) != (bound > r.Center) || math.Abs(bound-r.Center) != ParamK*r.Scale {
			t.Errorf("%v: z=%v bound=%v in %+v", x, z, bound, r)
		}
	}
	// Another argument, command or class has no range.
	if r := tab.ClassParam(ev.ClassKey, ev.CommandID, schemas.Hash([]byte("fan"))); r != (ParamRange{}) {
		t.Errorf("unknown argument has range %+v", r)
	}
}

func TestParamRangeNotWidenedByOutliers(t *testing.T) {
	tab := NewParamTable(1024)
	rng := rand.New(rand.NewPCG(3, 4))
	ev := teach(tab, rng, 500, 8, 19, 23)
	before := paramRange(tab, ev)
	// One device, or up to five, sends 90 many times.
	for i := range 5000 {
		paramEvent(ev, 100+i%5, 90)
		tab.Learn(ev)
	}
	if after := paramRange(tab, ev); after != before {
		t.Errorf("out-of-range values changed the range: %+v, was %+v", after, before)
	}
}

func TestParamRangeRestartsWhenTheClassMoves(t *testing.T) {
	tab := NewParamTable(1024)
	rng := rand.New(rand.NewPCG(5, 6))
	ev := teach(tab, rng, 500, 8, 19, 23)
	// Many devices move to Fahrenheit: the range restarts, then learns it.
	teach(tab, rng, 40, 40, 66, 74)
	if r := paramRange(tab, ev); r.Ready() && r.Center < 40 {
		t.Fatalf("range did not restart after 40 devices contradicted it: %+v", r)
	}
	teach(tab, rng, 500, 40, 66, 74)
	if r := paramRange(tab, ev); !r.Ready() || math.Abs(r.Center-70) > 1 {
		t.Errorf("range after the move: %+v, want centered on 70", r)
	}
}

func TestParamRangeConstantArgument(t *testing.T) {
	tab := NewParamTable(1024)
	var ev schemas.Event
	for i := range 200 {
		paramEvent(&ev, i%10, 60)
		tab.Learn(&ev)
	}
	r := paramRange(tab, &ev)
	if z, _ := r.Judge(61); z != 0 {
		t.Errorf("61 out of a constant 60's range %+v", r)
	}
	if z, _ := r.Judge(120); z == 0 {
		t.Errorf("120 within a constant 60's range %+v", r)
	}
}

// TestParamCorruptSlot: a slot whose stats are not finite (a corrupt
// snapshot) reads as no history and is relearned.
func TestParamCorruptSlot(t *testing.T) {
	tab := NewParamTable(1024)
	ev := teach(tab, rand.New(rand.NewPCG(7, 8)), 300, 8, 19, 23)
	j := tab.slot(paramKey(ev.ClassKey, ev.CommandID, ev.Args[0].Key), false)
	for _, c := range []float64{math.NaN(), math.Inf(1), 1e38} {
		tab.word(j, pStats).Store(packStats(c, 1))
		if r := paramRange(tab, ev); r.Ready() {
			t.Errorf("center %v reads as %+v", c, r)
		}
		tab.Learn(ev)
		if r := paramRange(tab, ev); r.Center != float64(float32(ev.Args[0].Value)) {
			t.Errorf("center %v: relearned as %+v, want the new value", c, r)
		}
	}
}

func TestParamTableDeterministicAndConcurrent(t *testing.T) {
	run := func(workers int) []byte {
		tab := NewParamTable(1024)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 9))
				var ev schemas.Event
				for i := range 2000 / workers {
					paramEvent(&ev, w*1000+i%4, 19+4*rng.Float64())
					tab.Learn(&ev)
				}
			}()
		}
		wg.Wait()
		return tab.AppendWords(nil)
	}
	if !bytes.Equal(run(1), run(1)) {
		t.Error("one writer: two runs differ")
	}
	run(4) // concurrent writers: must not race (go test -race)
}

func TestParamLearnDoesNotAllocate(t *testing.T) {
	tab := NewParamTable(1024)
	var ev schemas.Event
	paramEvent(&ev, 1, 21)
	if n := testing.AllocsPerRun(1000, func() { tab.Learn(&ev) }); n != 0 {
		t.Errorf("Learn allocates %.1f times", n)
	}
}

func BenchmarkParamLearn(b *testing.B) {
	tab := NewParamTable(1 << 16)
	ev := teach(tab, rand.New(rand.NewPCG(1, 1)), 500, 8, 19, 23)
	b.ReportAllocs()
	for b.Loop() {
		tab.Learn(ev)
	}
}

// TestParamArithmetic: floorScale and stepToward, the comparisons learn
// uses, are the builtin max and min bit for bit on the values learn gives
// them (finite centers and values, scales >= 0), signed zeros and ties
// included.
func TestParamArithmetic(t *testing.T) {
	same := func(what string, got, want float64, args ...float64) {
		t.Helper()
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("%s%v = %v (%#x), builtin %v (%#x)", what, args, got, math.Float64bits(got), want, math.Float64bits(want))
		}
	}
	builtinStep := func(c, step, x float64) float64 {
		switch {
		case x > c:
			return min(c+step, x)
		case x < c:
			return max(c-step, x)
		}
		return c
	}
	check := func(c, s, x float64) {
		t.Helper()
		same("floorScale", floorScale(c, s), max(s, ParamRelFloor*math.Abs(c), ParamAbsFloor), c, s)
		step := ParamRate * floorScale(c, s)
		same("stepToward", stepToward(c, step, x), builtinStep(c, step, x), c, step, x)
		// A step that lands exactly on x, or on zero.
		same("stepToward", stepToward(c, math.Abs(x-c), x), builtinStep(c, math.Abs(x-c), x), c, math.Abs(x-c), x)
		same("stepToward", stepToward(c, math.Abs(c), x), builtinStep(c, math.Abs(c), x), c, math.Abs(c), x)
	}
	negZero := math.Copysign(0, -1)
	edges := []float64{0, negZero, 1e-3, -1e-3, 0.05, -0.05, 1, -1, 3.5, 1e30, -1e30}
	for _, c := range edges {
		for _, s := range []float64{0, negZero, 1e-4, 1e-3, 0.5, 1e30} {
			for _, x := range edges {
				check(c, s, x)
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 1_000_000 {
		c, s, x := r.NormFloat64()*math.Exp2(r.Float64()*20-10), math.Abs(r.NormFloat64()), r.NormFloat64()*math.Exp2(r.Float64()*20-10)
		check(c, s, x)
		// float32-rounded, as the table stores them.
		check(float64(float32(c)), float64(float32(s)), x)
	}
}
