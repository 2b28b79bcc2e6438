package sim

import (
	"testing"
	"time"
)

func BenchmarkNext(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Duration = MaxDuration // never runs out during the benchmark
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	var bytes int
	b.ReportAllocs()
	for b.Loop() {
		line, _, ok := s.Next(buf[:0])
		if !ok {
			b.Fatal("the run ended")
		}
		bytes += len(line)
	}
	b.ReportMetric(float64(s.Emitted())/b.Elapsed().Seconds(), "events/s")
	b.SetBytes(int64(bytes / max(1, s.Emitted())))
}

func BenchmarkNew(b *testing.B) {
	cfg := DefaultConfig()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRun generates the whole default run (2000 devices, 3 hours).
func BenchmarkRun(b *testing.B) {
	buf := make([]byte, 0, 1024)
	var events int
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		s, err := New(DefaultConfig())
		if err != nil {
			b.Fatal(err)
		}
		for {
			line, _, ok := s.Next(buf[:0])
			if !ok {
				break
			}
			buf = line
		}
		events += s.Emitted()
	}
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
}
