// Package threadcpu measures the CPU time of a benchmark's OS thread
// (cpu-ns/op), which on a shared, oversubscribed machine says more than the
// wall time: other processes' load stretches ns/op, much less the thread's
// own CPU time.
package threadcpu

import (
	"runtime"
	"syscall"
	"testing"
)

// Meter holds the thread's CPU time at Start.
type Meter struct{ start int64 }

// Start locks the goroutine to its OS thread and reads its CPU time.
func Start() Meter {
	runtime.LockOSThread()
	return Meter{start: nanos()}
}

// Report adds the metric cpu-ns/op (the thread's CPU time since Start over
// b.N) and unlocks the thread.
func (m Meter) Report(b *testing.B) {
	b.ReportMetric(float64(nanos()-m.start)/float64(b.N), "cpu-ns/op")
	runtime.UnlockOSThread()
}

// nanos returns the calling thread's user and system CPU time.
func nanos() int64 {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD (Linux)
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// Nanos returns the thread's CPU time since Start, in nanoseconds (before
// Report: Start's goroutine is on Start's thread until then).
func (m Meter) Nanos() int64 { return nanos() - m.start }
