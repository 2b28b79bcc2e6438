package pipeline

import (
	"context"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
)

// benchDevices is the device count of the checkpoint benchmarks.
const benchDevices = 100_000

// BenchmarkCheckpointStore saves (every partition's object and the global
// one) and restores (a new pipeline's start) the state of 100k devices
// through the Object Store of an embedded NATS server, and, for comparison,
// through a file; it reports the bytes saved per operation.
func BenchmarkCheckpointStore(b *testing.B) {
	st := checkpointStore(b)
	quiet := slog.New(slog.DiscardHandler)
	cfg := Config{Workers: 2, CheckpointStore: st}
	p, err := New(cfg, nil, nil, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	fillDevices(p, benchDevices, 0)
	ctx := context.Background()
	bytesOf := func() float64 {
		infos, err := st.List(ctx)
		if err != nil {
			b.Fatal(err)
		}
		var n uint64
		for _, info := range infos {
			n += info.Size
		}
		return float64(n)
	}
	b.Run("save/objectstore", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			if err := p.saveStore(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(bytesOf(), "bytes/save")
		infos, _ := st.List(ctx)
		per := map[byte]uint64{}
		for _, info := range infos {
			per[info.Name[0]] += info.Size
		}
		b.Logf("devices objects %d bytes, entities %d, global %d", per['d'], per['e'], per['g'])
	})
	b.Run("restore/objectstore", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			q, err := New(cfg, nil, nil, nil, quiet)
			if err != nil {
				b.Fatal(err)
			}
			if q.Restored().Records != benchDevices {
				b.Fatalf("restored %d devices", q.Restored().Records)
			}
		}
	})
	path := filepath.Join(b.TempDir(), "state.ckpt")
	fileCfg := Config{Workers: 2, Checkpoint: path}
	f, err := New(fileCfg, nil, nil, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	fillDevices(f, benchDevices, 0)
	b.Run("save/file", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			if err := f.saveCheckpoint(storeTimeout); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore/file", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			q, err := New(fileCfg, nil, nil, nil, quiet)
			if err != nil {
				b.Fatal(err)
			}
			if q.Restored().Records != benchDevices {
				b.Fatalf("restored %d devices", q.Restored().Records)
			}
		}
	})
	b.Run("save/one-partition", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			if _, err := p.savePartition(ctx, 3, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("restore/one-partition", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			for _, w := range p.workers {
				dropPartition(w.Table(), 3, p.cfg.Partitions)
			}
			if m, err := p.loadPartition(ctx, 3); err != nil || m.Records == 0 {
				b.Fatalf("restored %d devices: %v", m.Records, err)
			}
		}
	})
}

// cpuPerOp reports the process's CPU time (user and system, the embedded
// NATS server's included) per operation as cpu-ms/op: on a shared machine,
// wall time says more about the neighbours. Call its result when b's loop
// is done.
func cpuPerOp(b *testing.B) func() {
	start := cpuTime()
	return func() { b.ReportMetric(float64(cpuTime()-start)/1e6/float64(b.N), "cpu-ms/op") }
}

func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
