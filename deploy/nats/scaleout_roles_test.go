package permissions_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestScaleOutRoles: the ingest and scorer roles of accounts.conf do their
// jobs with iotwatch's code on the real nats-server (an ingest instance sets
// up its streams and consumer, decodes the shipper's logs and publishes the
// events; a scorer, `run --source events`, sets up the rest, scores and acks
// every batch, counts the cluster-wide cap and watches the shared
// allowlist) and are refused what is not their job.
func TestScaleOutRoles(t *testing.T) {
	srv := StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	cfg := bus.DefaultStreamsConfig()

	// The ingest stage starts first, on a server with nothing set up.
	in := connect(t, srv, userIngest)
	icons, err := bus.EnsureIngest(ctx, in.js, cfg)
	if err != nil {
		t.Fatalf("ingest cannot set up its streams and consumer: %v", err)
	}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 4}, ingest.Options{}, icons, in.js, sink.NewNATSPublisher(in.js, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	wg.Go(func() {
		if err := st.Run(runCtx); err != nil {
			t.Errorf("ingest stage: %v", err)
		}
	})

	sh := connect(t, srv, userShipper)
	const msgs = 20
	start := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	for i := range msgs {
		data := line(fmt.Sprintf("meter-%d", i%4), start.Add(time.Duration(i)*time.Second))
		if _, err := sh.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw1"), []byte(data),
			jetstream.WithMsgID(fmt.Sprint("gw1-", i)), jetstream.WithExpectStream(schemas.StreamLogs)); err != nil {
			t.Fatalf("shipper cannot publish a log: %v", err)
		}
	}
	waitUntil(t, "the ingest stage acked every log", func() (bool, string) {
		return st.M.Acked.Load() == msgs, fmt.Sprintf("acked %d of %d", st.M.Acked.Load(), msgs)
	})

	// A scorer: `run --source events`, with the cluster-wide cap and the
	// shared allowlist.
	sc := connect(t, srv, userScorer)
	scons, kv, err := bus.EnsureScorer(ctx, sc.js, cfg, nil)
	if err != nil {
		t.Fatalf("scorer cannot set up its streams, buckets and consumer: %v", err)
	}
	bkv, err := sc.js.KeyValue(ctx, schemas.KVBudgets)
	if err != nil {
		t.Fatalf("scorer cannot open the budgets bucket: %v", err)
	}
	budget := cluster.NewKVBudget(bkv, cluster.BudgetConfig{Name: schemas.BudgetBlocks, Max: 100, Timeout: 30 * time.Second}, log)
	if !budget.Take(1, 1) || budget.Fallbacks.Load() != 0 {
		t.Fatal("scorer cannot count the block cap in the bucket")
	}
	events, err := sc.js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: clickhouse.Get(t).DSN(), Database: "scaleout_roles", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { // after the scorer stopped writing
		stop()
		wg.Wait()
		ch.Close()
	}()
	if err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 20 * time.Millisecond, Stream: events, BlockBudget: budget},
		scons, ch, sink.NewNATSPublisher(sc.js, kv, log), log)
	if err != nil {
		t.Fatal(err)
	}
	akv, err := sc.js.KeyValue(ctx, schemas.KVAllowlist)
	if err != nil {
		t.Fatalf("scorer cannot open the allowlist bucket: %v", err)
	}
	ready := make(chan struct{})
	wg.Go(func() {
		if err := cluster.NewAllowlist(akv, nil, p.Allowlist(), nil, log).Run(runCtx, ready); err != nil {
			t.Errorf("scorer cannot watch the allowlist: %v", err)
		}
	})
	select {
	case <-ready:
	case <-time.After(2 * time.Minute): // a hang bound
		t.Fatal("the scorer never read the allowlist bucket")
	}
	wg.Go(func() {
		if err := p.Run(runCtx); err != nil {
			t.Errorf("scorer run: %v", err)
		}
	})
	waitUntil(t, "the scorer acked every event batch", func() (bool, string) {
		info, err := scons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.Delivered.Consumer > 0 && info.NumAckPending == 0 && info.NumPending == 0 && p.M.Events.Load() == msgs,
			fmt.Sprintf("events %d of %d; server: pending %d, ack-pending %d", p.M.Events.Load(), msgs, info.NumPending, info.NumAckPending)
	})
	in.noViolations(t)
	sc.noViolations(t)

	// And nothing else.
	decision := schemas.SubjectDecisionsPrefix + "." + schemas.ActionBlock
	for _, s := range []string{decision, schemas.SubjectAlertsPrefix + ".high", schemas.SubjectIncidentsPrefix + ".high",
		bus.LogSubject(schemas.FormatJSON, "gw1"), schemas.SubjectDecisionsApplied,
		bus.KVSubject(schemas.KVActiveBlocks, "x"), bus.KVSubject(schemas.KVBudgets, "x"), bus.KVSubject(schemas.KVAllowlist, "x"),
		"$JS.API.STREAM.CREATE." + schemas.StreamDecisions, "$JS.API.STREAM.PURGE." + schemas.StreamLogs,
		"$JS.API.STREAM.DELETE." + schemas.StreamEvents,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamEvents + "." + schemas.ConsumerScorer,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.DELETE." + schemas.StreamLogs + "." + schemas.ConsumerIngest} {
		in.denied(t, s)
	}
	for _, s := range []string{schemas.EventsSubject(0), bus.LogSubject(schemas.FormatJSON, "gw1"), schemas.SubjectDecisionsApplied,
		bus.KVSubject(schemas.KVAllowlist, "x"), "$JS.API.STREAM.PURGE." + schemas.StreamEvents,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerIngest,
		"$JS.API.CONSUMER.DELETE." + schemas.StreamEvents + "." + schemas.ConsumerScorer} {
		sc.denied(t, s)
	}
	for _, c := range []*client{in, sc} {
		c.deniedSub(t, "_INBOX.>")
		c.deniedSub(t, schemas.InboxPipeline+".>")
	}
	in.deniedSub(t, schemas.InboxScorer+".>")
	sc.deniedSub(t, schemas.InboxIngest+".>")
}
