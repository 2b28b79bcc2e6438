package restart_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestPartitionHooks: a new owner takes over every partition through the
// hooks a partition owner calls. The first instance scores messages 1 to
// 70 and saves its checkpoint to the Object Store; messages 71 to 100 are
// then "scored by an owner that died" (nobody reads them); a second
// instance, owning no partition at start, acquires each partition with
// RestorePartition(p, 100), which loads object p and judges again that
// partition's events of messages 71 to 100, then consumes from message 101.
// Every event of 71 to 100 is judged exactly once, and the alerts,
// decisions and scored rows are the undisturbed run's.
func TestPartitionHooks(t *testing.T) {
	cfg := pipeline.Config{Workers: 2, FlushInterval: 20 * time.Millisecond, FetchBatch: 4, FetchWait: 50 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)
	ctx := context.Background()

	control := newCrashRig(t, "hooks_control")
	_, cons, pub := control.connect(t)
	cfg.AckWait = control.streams.AckWait
	p, err := pipeline.New(cfg, cons, control.ch, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	control.caughtUp(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := control.results(t)

	r := newCrashRigOf(t, "hooks", 70)
	_, js, cons, pub := r.connectJS(t)
	first := cfg
	if first.CheckpointStore, err = bus.EnsureCheckpoints(ctx, js, r.streams); err != nil {
		t.Fatal(err)
	}
	a, err := pipeline.New(first, cons, r.ch, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel = context.WithCancel(ctx)
	go func() { done <- a.Run(runCtx) }()
	r.caughtUpTo(t, schemas.ConsumerPipeline, 70)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Messages 71 to 100: the dead owner's. The new owner's consumer starts
	// at 101.
	r.publish(t, 70, 100)
	ci, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cc := ci.Config
	cc.Durable, cc.Name = "hooks-new-owner", ""
	cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, 101
	_, js, _, pub = r.connectJS(t)
	newCons, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamLogs, cc)
	if err != nil {
		t.Fatal(err)
	}
	second := cfg
	second.PartitionOwnership = true
	if second.CheckpointStore, err = bus.EnsureCheckpoints(ctx, js, r.streams); err != nil {
		t.Fatal(err)
	}
	if second.Stream, err = js.Stream(ctx, schemas.StreamLogs); err != nil {
		t.Fatal(err)
	}
	b, err := pipeline.New(second, newCons, r.ch, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	if b.Restored().Records != 0 {
		t.Fatalf("an instance owning no partition restored %d devices at start", b.Restored().Records)
	}
	runCtx, cancel = context.WithCancel(ctx)
	go func() { done <- b.Run(runCtx) }()
	for part := range schemas.DefaultPartitions {
		if err := b.RestorePartition(ctx, part, 100); err != nil {
			t.Fatalf("partition %d: %v", part, err)
		}
	}
	if got, wantEvents := b.M.CaughtUp.Load(), uint64(30*40); got != wantEvents {
		t.Fatalf("the partitions' catch-ups judged %d events of messages 71 to 100, want each of their %d once", got, wantEvents)
	}
	r.publish(t, 100, crashMessages)
	r.caughtUpTo(t, cc.Durable, crashMessages)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := r.results(t)
	t.Logf("control: %d alerts, %d decisions; after the takeover: %d alerts, %d decisions", len(want.storedAlerts), len(want.storedDecisions),
		len(got.storedAlerts), len(got.storedDecisions))
	testids.Compare(t, "alerts in ClickHouse", "after the takeover", got.storedAlerts, want.storedAlerts)
	testids.Compare(t, "decisions in ClickHouse", "after the takeover", got.storedDecisions, want.storedDecisions)
	testids.Compare(t, "alerts on NATS", "after the takeover", got.natsAlerts, want.natsAlerts)
	testids.Compare(t, "decisions on NATS", "after the takeover", got.natsDecisions, want.natsDecisions)
	if n, w := r.e.count(t, schemas.TableScored), control.e.count(t, schemas.TableScored); n != w {
		t.Errorf("scored rows: %d after the takeover, %d in the control run", n, w)
	}
}
