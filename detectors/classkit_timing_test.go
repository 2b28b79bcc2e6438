package detectors

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"
)

// cpuTime returns the CPU time (user and system) the process has used: on
// a shared machine, CPU-ns per operation is the figure that other load
// disturbs least.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scatteredKeys returns n distinct keys and an order of 1<<20 look-ups of
// them at random: as a fleet's events look up their classes' commands,
// every one in a cache line of its own in tables of megabytes.
func scatteredKeys(n int) (keys []uint64, order []uint32) {
	rng := rand.New(rand.NewPCG(11, 13))
	keys = make([]uint64, n)
	for i := range keys {
		keys[i] = rng.Uint64()
	}
	order = make([]uint32, 1<<20)
	for i := range order {
		order[i] = uint32(rng.IntN(n))
	}
	return keys, order
}

// BenchmarkParamLearnValueScattered: LearnValue of 20,000 (class, command)
// keys at random in a table of 2^18 slots (the pipeline's default
// ClassCommands), so that each call's slot is mostly not in the caches.
func BenchmarkParamLearnValueScattered(b *testing.B) {
	tab := NewParamTable(1 << 18)
	keys, order := scatteredKeys(20000)
	for i, k := range keys { // ranges Ready, so every call judges and learns
		for d := range 60 {
			tab.LearnValue(k, 7, 9, float64(i%50+d%3), 4, uint64(d)<<58)
		}
	}
	b.ReportAllocs()
	i, cpu0 := 0, cpuTime()
	for b.Loop() {
		k := keys[order[i&(len(order)-1)]]
		tab.LearnValue(k, 7, 9, float64(i%50), 4, uint64(i)<<58)
		i++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkDeviceSketchesScattered: Learn then Devices of 20,000 keys at
// random in a table of 2^18 slots, as the command detector reads and
// teaches a command's sketch per event.
func BenchmarkDeviceSketchesScattered(b *testing.B) {
	s := NewDeviceSketches(1 << 18)
	keys, order := scatteredKeys(20000)
	for _, k := range keys {
		s.Learn(k, 1)
	}
	b.ReportAllocs()
	i, sum, cpu0 := 0, 0.0, cpuTime()
	for b.Loop() {
		k := keys[order[i&(len(order)-1)]]
		s.Learn(k, uint64(i)<<58)
		sum += s.Devices(k, 0)
		i++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	if sum < 0 {
		b.Fatal(sum)
	}
}
