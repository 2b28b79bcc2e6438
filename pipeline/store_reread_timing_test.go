package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkRestoreOverlappedGet restores an 8 MB partition object, and one
// whose first get is overlapped by a put of the object (the owner saving again
// while the get is paused after 64 KB: replacingStore), at the default
// objectStall and RestorePartition's deadline: the time a restore loses to a get whose chunks were purged
// under it, which waits for the bound or meets the object replaced, then
// the get made again.
func BenchmarkRestoreOverlappedGet(b *testing.B) {
	const partitions, part = 2, 1
	st := checkpointStore(b)
	quiet := slog.New(slog.DiscardHandler)
	owner, err := New(Config{Workers: 2, CheckpointStore: st, Partitions: partitions}, nil, nil, nil, quiet)
	if err != nil {
		b.Fatal(err)
	}
	devices := 2 * (8 << 20) / (owner.layout.Size + 24)
	fillNoise(owner, devices, 0)
	ctx := context.Background()
	seq := uint64(77)
	if _, err := owner.savePartition(ctx, part, seq); err != nil {
		b.Fatal(err)
	}
	replacing := &replacingStore{ObjectStore: st, name: schemas.CheckpointDevicesObject(part), after: 64 << 10, replace: func() error {
		seq++
		_, err := owner.savePartition(ctx, part, seq)
		return err
	}}
	for _, overlaps := range []int32{0, 1} {
		b.Run(fmt.Sprintf("overlapped=%d", overlaps), func(b *testing.B) {
			r, err := New(Config{Workers: 2, Partitions: partitions}, nil, nil, nil, quiet)
			if err != nil {
				b.Fatal(err)
			}
			r.cfg.CheckpointStore = replacing
			replacing.gets.Store(0)
			for b.Loop() {
				replacing.overlaps.Store(overlaps)
				lctx, cancel := context.WithTimeout(ctx, storeTimeout) // as RestorePartition's
				_, err := r.loadPartition(lctx, part)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				for _, w := range r.workers {
					dropPartition(w.Table(), part, partitions)
				}
			}
			b.ReportMetric(float64(replacing.gets.Load())/float64(b.N), "gets/op")
		})
	}
}
