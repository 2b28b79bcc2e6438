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
	"github.com/iotwatch/iotwatch/schemas"
)

// handoverRuns counts the runs of TestHandoverResumesPartitions (fresh
// databases for -count).
var handoverRuns int

// handoverRig is the ingest stage's 8 partitions of one fleet, already
// published, with the scorers' consumers, presence bucket and checkpoint
// store.
type handoverRig struct {
	e        *env
	events   jetstream.Stream
	presence jetstream.KeyValue
	store    jetstream.ObjectStore
	ingested uint64
}

// handoverPinnedTTL is long enough that a loaded machine's scorer keeps
// its pins: a clean stop unpins its partitions, so the takeover does not
// wait for it.
const handoverPinnedTTL = 5 * time.Second

func newHandoverRig(t *testing.T, db string, msgs [][]byte) *handoverRig {
	t.Helper()
	ctx := context.Background()
	e := setup(t, db)
	publishLogs(t, e.js, msgs)
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
	runUntilDone(t, icons, st.Run) // the scorers read a backlog
	r := &handoverRig{e: e, ingested: st.M.Events.Load()}
	if r.events, err = e.js.Stream(ctx, schemas.StreamEvents); err != nil {
		t.Fatal(err)
	}
	if r.presence, err = ensurePresence(ctx, e.js, scfg, handoverPinnedTTL); err != nil {
		t.Fatal(err)
	}
	if r.store, err = bus.EnsureCheckpoints(ctx, e.js, scfg); err != nil {
		t.Fatal(err)
	}
	return r
}

// handoverScorer is one scorer instance: a partition consumer whose Owner
// is the pipeline's Handover.
type handoverScorer struct {
	c    *partition.Consumer
	h    *pipeline.Handover
	p    *pipeline.Pipeline
	stop context.CancelFunc
	done chan error
}

// start starts a scorer whose partitions' state travels with their
// ownership; plain: one without Handover and checkpoints (the undisturbed
// reference).
func (r *handoverRig) start(t *testing.T, plain bool) *handoverScorer {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	}
	cons := make([]jetstream.Consumer, 8)
	for p := range cons {
		var err error
		if cons[p], err = r.e.js.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p)); err != nil {
			t.Fatal(err)
		}
	}
	h := pipeline.NewHandover(log)
	pcfg := partition.Config{PinnedTTL: handoverPinnedTTL, Presence: r.presence, Owner: h, Log: log}
	cfg := pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, CheckpointStore: r.store,
		PartitionOwnership: true, Partitions: 8, Stream: r.events, CheckpointEvery: time.Second, DrainTimeout: 10 * time.Second}
	if plain {
		pcfg.Owner = nil
		cfg = pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}
	}
	c, err := partition.New(ctx, r.events, cons, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(cfg, c, r.e.ch, r.e.pub, log)
	if err != nil {
		t.Fatal(err)
	}
	h.Attach(p)
	runCtx, stop := context.WithCancel(ctx)
	s := &handoverScorer{c: c, h: h, p: p, stop: stop, done: make(chan error, 1)}
	go func() { s.done <- p.Run(runCtx) }()
	return s
}

// stopClean drains s (its results durable, its owned partitions saved),
// then gives its partitions back (nak, unpin).
func (s *handoverScorer) stopClean(t *testing.T) {
	t.Helper()
	s.stop()
	if err := <-s.done; err != nil {
		t.Fatal(err)
	}
	s.h.Close()
	s.c.Stop(context.Background())
}

// waitDone waits until every partition consumer has nothing pending or
// unacked.
func (r *handoverRig) waitDone(t *testing.T, s *handoverScorer) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Minute) // a hang bound
	for {
		info, err := s.c.Info(context.Background())
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scorer did not catch up: %+v, err %v; owns %v", info, err, s.c.Owned())
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition
	}
}

// scoredCounts returns the scored rows raw, FINAL and by distinct event id.
func (r *handoverRig) scoredCounts(t *testing.T) (raw, final, distinct uint64) {
	t.Helper()
	ctx := context.Background()
	q := func(sql string) uint64 {
		var n uint64
		if err := r.e.conn.QueryRow(ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	tbl := r.e.db + "." + schemas.TableScored
	return q("SELECT count() FROM " + tbl), q("SELECT count() FROM " + tbl + " FINAL"),
		q(fmt.Sprintf("SELECT uniqExact(%s) FROM %s", schemas.ColEventID, tbl))
}

// TestHandoverResumesPartitions: a scorer stopped mid-stream saves the
// partitions it owns; a new instance acquires them, restores each
// partition's object and catches up from its position, and the two runs
// together give what one undisturbed scorer gives over the same events: the
// same alert and decision ids, and every event scored once (raw = FINAL =
// distinct = events ingested). Alerts raised after the handover by devices
// that learned their baselines before it are raised again only if their
// records travelled: a cold start would miss them and raise first-seen
// alerts of its own.
func TestHandoverResumesPartitions(t *testing.T) {
	msgs := fleetMessages(t, 300, 3*time.Hour)
	handoverRuns++

	ref := newHandoverRig(t, fmt.Sprintf("handover_ref_%d", handoverRuns), msgs)
	one := ref.start(t, true)
	ref.waitDone(t, one)
	one.stopClean(t)
	want := ref.e.outcome(t)

	r := newHandoverRig(t, fmt.Sprintf("handover_%d", handoverRuns), msgs)
	a := r.start(t, false)
	half := r.ingested / 2
	deadline := time.Now().Add(5 * time.Minute) // a hang bound
	for a.p.M.Events.Load() < half {
		if time.Now().After(deadline) {
			t.Fatalf("the first scorer scored only %d events", a.p.M.Events.Load())
		}
		time.Sleep(5 * time.Millisecond) // polling the scorer's progress
	}
	a.stopClean(t)
	scoredA := a.p.M.Events.Load()
	stopped := time.Now()
	b := r.start(t, false)
	for len(b.c.Owned()) < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("the second scorer owns only %v", b.c.Owned())
		}
		time.Sleep(5 * time.Millisecond) // polling ownership
	}
	owned := time.Since(stopped)
	r.waitDone(t, b)
	n, last := b.h.Takeovers()
	b.stopClean(t)
	got := r.e.outcome(t)
	scoredB := b.p.M.Events.Load()
	t.Logf("redelivered and acked without judging: a %d, b %d", a.p.M.RedeliveredDone.Load(), b.p.M.RedeliveredDone.Load())
	t.Logf("%d events: a scored %d, b %d (%d caught up); b owned all 8 partitions %.2fs after a stopped; %d takeovers, the last took %.3fs",
		r.ingested, scoredA, scoredB, b.p.M.CaughtUp.Load(), owned.Seconds(), n, last.Seconds())

	if scoredA == 0 || scoredA >= r.ingested || scoredB == 0 {
		t.Errorf("scored: a %d, b %d of %d: want both some, a not all", scoredA, scoredB, r.ingested)
	}
	raw, final, distinct := r.scoredCounts(t)
	if raw != want.rows || final != want.rows || distinct != want.rows {
		t.Errorf("scored rows: raw %d, FINAL %d, distinct %d; want %d each", raw, final, distinct, want.rows)
		var n, lo, hi uint64
		q := fmt.Sprintf("SELECT count(), min(%s), max(%s) FROM %s.%s WHERE %s NOT IN (SELECT %s FROM %s.%s)", schemas.ColStreamSeq, schemas.ColStreamSeq,
			ref.e.db, schemas.TableScored, schemas.ColEventID, schemas.ColEventID, r.e.db, schemas.TableScored)
		if err := r.e.conn.QueryRow(context.Background(), q).Scan(&n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d events missing, of log messages %d to %d", n, lo, hi)
		q = fmt.Sprintf("SELECT count(), min(%s), max(%s) FROM %s.%s WHERE %s NOT IN (SELECT %s FROM %s.%s)", schemas.ColStreamSeq, schemas.ColStreamSeq,
			r.e.db, schemas.TableScored, schemas.ColEventID, schemas.ColEventID, ref.e.db, schemas.TableScored)
		if err := r.e.conn.QueryRow(context.Background(), q).Scan(&n, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d events not in the undisturbed run, of log messages %d to %d", n, lo, hi)
		rows, err := r.e.conn.Query(context.Background(), fmt.Sprintf("SELECT toString(%s), %s, %s FROM %s.%s WHERE %s NOT IN (SELECT %s FROM %s.%s) LIMIT 5",
			schemas.ColEventID, schemas.ColDevice, schemas.ColStreamSeq, r.e.db, schemas.TableScored, schemas.ColEventID, schemas.ColEventID, ref.e.db, schemas.TableScored))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, dev string
			var seq uint64
			_ = rows.Scan(&id, &dev, &seq)
			t.Logf("extra: id %s device %s seq %d", id, dev, seq)
		}
		rows.Close()
	}
	if d := diff(want.alerts, got.alerts); d != "" {
		t.Errorf("alerts differ from an undisturbed run (%d vs %d):\n%s", len(got.alerts), len(want.alerts), d)
	}
	if d := diff(want.decisions, got.decisions); d != "" {
		t.Errorf("decisions differ from an undisturbed run:\n%s", d)
	}
	if len(want.alerts) == 0 {
		t.Error("the undisturbed run raised no alert: the comparison proves nothing")
	}
	t.Logf("%d alerts, %d decisions (undisturbed: %d, %d)", len(got.alerts), len(got.decisions), len(want.alerts), len(want.decisions))
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
