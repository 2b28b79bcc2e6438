package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestTwoPipelinesOwnPartitions runs two scorer pipelines over the ingest
// stage's 8 partitions, each writing its rows to a database of its own in
// the same ClickHouse: while the ingest stage publishes (the first to pull
// a partition's first event is pinned it; one owning more than half
// releases partitions for balance as the other waits), every event is scored by exactly one of them (no event id in both
// databases; the events scored add up to the events ingested), both score
// some, and the consumers end with nothing pending or unacked.
func TestTwoPipelinesOwnPartitions(t *testing.T) {
	msgs := fleetMessages(t, 300, 3*time.Hour)
	ownRuns++ // fresh databases for each run of the test (-count)
	dbA, dbB := fmt.Sprintf("own_a_%d", ownRuns), fmt.Sprintf("own_b_%d", ownRuns)
	e := setup(t, dbA)
	publishLogs(t, e.js, msgs)
	ctx := context.Background()
	scfg := bus.DefaultStreamsConfig()
	scfg.AckWait = 30 * time.Second
	icons, err := bus.EnsureIngest(ctx, e.js, scfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 8}, ingest.Options{}, icons, e.js, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	es, err := e.js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	// A scorer that does not pull for a pinned TTL loses its pin while it
	// still holds the partition's unacked messages, and the new owner
	// scores them again after the ack wait: nothing fences the old owner
	// yet. In CI at a load of 15 with -race, a 1 s TTL made the two scorers
	// trade partitions and score 20,074 events twice. 3 s leaves a margin
	// for a loaded machine's stalls while balance (checked once a TTL)
	// still happens within the run; 15 s left it no time to.
	const pinnedTTL = 3 * time.Second
	presence, err := ensurePresence(ctx, e.js, scfg, pinnedTTL)
	if err != nil {
		t.Fatal(err)
	}
	chB, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: chDSN, Database: dbB, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer chB.Close()
	if err := chB.Migrate(ctx); err != nil {
		t.Fatal(err)
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	type scorer struct {
		c    *partition.Consumer
		p    *pipeline.Pipeline
		done chan error
	}
	start := func(rows pipeline.RowWriter) *scorer {
		cons := make([]jetstream.Consumer, 8)
		for p := range cons {
			if cons[p], err = e.js.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p)); err != nil {
				t.Fatal(err)
			}
		}
		c, err := partition.New(ctx, es, cons, partition.Config{PinnedTTL: pinnedTTL, Presence: presence, Log: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}, c, rows, e.pub, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		s := &scorer{c: c, p: p, done: make(chan error, 1)}
		go func() { s.done <- p.Run(runCtx) }()
		return s
	}
	a, b := start(e.ch), start(chB)
	// The scorers pull before the first event exists and score while the
	// ingest stage publishes.
	runUntilDone(t, icons, st.Run)

	deadline := time.Now().Add(5 * time.Minute)
	for {
		info, err := a.c.Info(ctx)
		if err != nil { // a loaded machine may time an info request out: ask again
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			continue
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scorers did not catch up: pending=%d ack_pending=%d; a owns %v, b owns %v",
				info.NumPending, info.NumAckPending, a.c.Owned(), b.c.Owned())
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition
	}
	ownedA, ownedB := a.c.Owned(), b.c.Owned()
	stop()
	for _, s := range []*scorer{a, b} {
		if err := <-s.done; err != nil {
			t.Fatal(err)
		}
		s.c.Stop(ctx)
	}

	na, nb := a.p.M.Events.Load(), b.p.M.Events.Load()
	if na+nb != st.M.Events.Load() || na == 0 || nb == 0 {
		t.Errorf("events scored: a %d, b %d, together %d; ingested %d (want equal, both > 0)", na, nb, na+nb, st.M.Events.Load())
	}
	var both uint64
	q := fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s IN (SELECT %s FROM %s.%s)",
		dbA, schemas.TableScored, schemas.ColEventID, schemas.ColEventID, dbB, schemas.TableScored)
	if err := e.conn.QueryRow(ctx, q).Scan(&both); err != nil {
		t.Fatal(err)
	}
	if both != 0 {
		t.Errorf("%d events scored by both", both)
	}
	t.Logf("%d events: a scored %d (owning %v at the end), b %d (owning %v)", na+nb, na, ownedA, nb, ownedB)
}

// ownRuns counts the runs of TestTwoPipelinesOwnPartitions in this process.
var ownRuns int

// ensurePresence creates the partition consumers and returns the scorers'
// presence bucket.
func ensurePresence(ctx context.Context, js jetstream.JetStream, scfg bus.StreamsConfig, pinnedTTL time.Duration) (jetstream.KeyValue, error) {
	_, presence, _, err := bus.EnsurePartitions(ctx, js, scfg, 8, pinnedTTL)
	return presence, err
}
