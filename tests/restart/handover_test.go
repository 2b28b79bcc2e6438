package restart_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/pipeline/sink"
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
	icons    jetstream.Consumer // the ingest stage's
	ingested uint64
	// checkpointEvery is the scorers' periodic save (0: only at a clean
	// stop). Only the crash needs one: under -race at load 17 a save took
	// 8-26 s, the pipeline paused, and one every second left it saving
	// most of the time, its leases lapsing.
	checkpointEvery time.Duration
	// drainTimeout bounds a scorer's drain (Config.DrainTimeout): a hang
	// bound for a clean stop (under -race -cpu 1 at load 20 the last
	// flush took more than 10 s), short for the crash, whose drain cannot
	// finish (its inserts hang).
	drainTimeout time.Duration
	// wrapStore, when set, wraps the checkpoint store of the next scorer
	// started (a test's faults).
	wrapStore func(jetstream.ObjectStore) jetstream.ObjectStore
}

// handoverPinnedTTL is long enough that a scorer stalled by -race on a
// loaded machine keeps its pins: a clean stop unpins its partitions and a
// crash closes its connection, so the takeovers do not wait for it. (With
// 5 s under -race at load 14, the surviving scorer lost and re-took its own
// pins while messages it had pulled under the old pin were still to be
// scored, and events went missing: the stalled-owner path is not exact yet.)
const handoverPinnedTTL = 30 * time.Second

func newHandoverRig(t *testing.T, db string, msgs [][]byte, ackWait time.Duration) *handoverRig {
	t.Helper()
	ctx := context.Background()
	e := setup(t, db)
	scfg := bus.DefaultStreamsConfig()
	scfg.AckWait = ackWait
	icons, err := bus.EnsureIngest(ctx, e.JS, scfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &handoverRig{e: e, icons: icons, drainTimeout: 2 * time.Minute}
	r.ingest(t, msgs, 0) // the scorers read a backlog
	if r.events, err = e.JS.Stream(ctx, schemas.StreamEvents); err != nil {
		t.Fatal(err)
	}
	if r.presence, err = ensurePresence(ctx, e.JS, scfg, handoverPinnedTTL); err != nil {
		t.Fatal(err)
	}
	if r.store, err = bus.EnsureCheckpoints(ctx, e.JS, scfg); err != nil {
		t.Fatal(err)
	}
	return r
}

// ingest publishes msgs, log messages from number from of the fleet on,
// and runs the ingest stage until it has republished them as events.
func (r *handoverRig) ingest(t *testing.T, msgs [][]byte, from int) {
	t.Helper()
	subject := bus.LogSubject(schemas.FormatJSON, "sim")
	for i, m := range msgs {
		if _, err := r.e.JS.Publish(context.Background(), subject, m, jetstream.WithMsgID(fmt.Sprint("m-", from+i))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 8}, ingest.Options{}, r.icons, r.e.JS, r.e.Pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	pipetest.RunUntilDone(t, r.icons, st.Run)
	r.ingested += st.M.Events.Load()
}

// handoverScorer is one scorer instance: a partition consumer whose Owner
// is the pipeline's Handover.
type handoverScorer struct {
	c    *partition.Consumer
	h    *pipeline.Handover
	p    *pipeline.Pipeline
	stop context.CancelFunc
	// crash ends the partition consumer without Stop (no nak, no unpin).
	crash context.CancelFunc
	done  chan error
}

// start starts a scorer whose partitions' state travels with their
// ownership; plain: one without Handover and checkpoints (the undisturbed
// reference).
func (r *handoverRig) start(t *testing.T, plain bool) *handoverScorer {
	t.Helper()
	return r.startOn(t, plain, r.e.JS, r.e.CH, r.e.Pub)
}

// startOn is start with the scorer's own NATS client, row writer and
// publisher.
func (r *handoverRig) startOn(t *testing.T, plain bool, js jetstream.JetStream, rows pipeline.RowWriter, pub pipeline.Publisher) *handoverScorer {
	t.Helper()
	ctx := context.Background()
	events, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(&testWriter{t}, nil))
	}
	cons := make([]jetstream.Consumer, 8)
	for p := range cons {
		if cons[p], err = js.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p)); err != nil {
			t.Fatal(err)
		}
	}
	h := pipeline.NewHandover(log)
	// Pulls of 32: a clean stop scores what its pulls under way deliver
	// (Quiesce), at most two pulls per partition, which must leave the
	// fleet's second half mostly to the next owner.
	pcfg := partition.Config{PinnedTTL: handoverPinnedTTL, Presence: r.presence, Owner: h, Log: log, PullBatch: 32}
	store, err := js.ObjectStore(ctx, schemas.BucketCheckpoints)
	if err != nil {
		t.Fatal(err)
	}
	if r.wrapStore != nil {
		store, r.wrapStore = r.wrapStore(store), nil
	}
	cfg := pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, CheckpointStore: store,
		PartitionOwnership: true, Partitions: 8, Stream: events, CheckpointEvery: r.checkpointEvery, DrainTimeout: r.drainTimeout}
	if plain {
		pcfg.Owner = nil
		cfg = pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond}
	}
	pctx, crash := context.WithCancel(ctx)
	c, err := partition.New(pctx, events, cons, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(cfg, c, rows, pub, log)
	if err != nil {
		t.Fatal(err)
	}
	h.Attach(p)
	runCtx, stop := context.WithCancel(ctx)
	s := &handoverScorer{c: c, h: h, p: p, stop: stop, crash: crash, done: make(chan error, 1)}
	go func() { s.done <- p.Run(runCtx) }()
	return s
}

// stopClean stops s as `run` does on SIGTERM: no more pulls, what was
// pulled is scored (partition.Consumer.Quiesce), then s drains (its results
// durable, its owned partitions saved) and gives its partitions back
// (unpin).
func (s *handoverScorer) stopClean(t *testing.T) {
	t.Helper()
	qctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang bound
	err := s.c.Quiesce(qctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
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

// scoredCounts returns the scored rows matching where, raw, FINAL and by
// distinct event id.
func (r *handoverRig) scoredCounts(t *testing.T, where string) (raw, final, distinct uint64) {
	t.Helper()
	tbl := r.e.DB + "." + schemas.TableScored
	return r.query(t, "SELECT count() FROM "+tbl+" WHERE "+where), r.query(t, "SELECT count() FROM "+tbl+" FINAL WHERE "+where),
		r.query(t, fmt.Sprintf("SELECT uniqExact(%s) FROM %s WHERE %s", schemas.ColEventID, tbl, where))
}

// missing counts the scored rows matching where of database db that r's
// database lacks.
func (r *handoverRig) missing(t *testing.T, db, where string) uint64 {
	t.Helper()
	return r.query(t, fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s AND %s NOT IN (SELECT %s FROM %s.%s)",
		db, schemas.TableScored, where, schemas.ColEventID, schemas.ColEventID, r.e.DB, schemas.TableScored))
}

func (r *handoverRig) query(t *testing.T, sql string) uint64 {
	t.Helper()
	var n uint64
	if err := r.e.Conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHandoverResumesPartitions: a scorer stopped mid-stream saves the
// partitions it owns; a new instance acquires them, restores each
// partition's object and catches up from its position, and the two runs
// together give what one undisturbed scorer gives over the same events: the
// same alert and decision ids, and every event scored once (raw = FINAL =
// distinct). A cold start of the moved partitions fails it: their devices'
// late alerts need the baselines learned before the handover (checked by
// deleting the objects before the takeover: alerts and decisions differ).
//
// (In one CI run the new owner acked 720 redelivered messages, 9,434
// events, without judging them: messages the first scorer had been
// delivered and not acked came back after later ones, see
// TestTakeoverJudgesWhatWasLeftUnacked.)
func TestHandoverResumesPartitions(t *testing.T) { testHandover(t, false) }

// TestHandoverAfterCrash: as TestHandoverResumesPartitions, but the first
// scorer crashes (its inserts hang, its NATS connection drops, nothing
// saved at the end, no unpin): the next owner restores the last periodic
// save, catches up to its first message, and acks the crashed scorer's
// unacked messages, redelivered after the ack wait, without judging them
// again.
//
// Earlier failures: the crash never came on a quiet machine (the whole
// fleet scored before the first save: the second half now comes one
// message after each save), and at load ~20 without -race 14 of 51,400
// events had no row (the crashed scorer's unacked messages came back after
// later ones and were acked unjudged, as in
// TestTakeoverJudgesWhatWasLeftUnacked).
func TestHandoverAfterCrash(t *testing.T) { testHandover(t, true) }

func testHandover(t *testing.T, crash bool) {
	msgs := pipetest.FleetMessages(t, 300, 3*time.Hour)
	handoverRuns++
	ackWait := 30 * time.Second
	if crash {
		ackWait = 5 * time.Second // the crashed scorer's unacked messages come back within the test
	}

	ref := newHandoverRig(t, fmt.Sprintf("handover_ref_%d", handoverRuns), msgs, ackWait)
	one := ref.start(t, true)
	ref.waitDone(t, one)
	one.stopClean(t)
	want := ref.e.Outcome(t)

	// The crash comes after a periodic save (the next owner restores it)
	// while messages are still to come: the fleet's first half is there at
	// the start, then one message after each save until the crash, then
	// the rest. (On a quiet machine the whole fleet was scored before the
	// first save, which comes only after a fetch, and the crash never came.)
	first := len(msgs)
	if crash {
		first = len(msgs) / 2
	}
	r := newHandoverRig(t, fmt.Sprintf("handover_%d", handoverRuns), msgs[:first], ackWait)
	if crash {
		r.checkpointEvery = time.Second // the restart restores the last periodic save
		r.drainTimeout = 10 * time.Second
	}
	half := r.ingested / 2
	var a *handoverScorer
	var crashed atomic.Bool
	var ncA *nats.Conn
	if !crash {
		a = r.start(t, false)
	} else {
		var jsA jetstream.JetStream
		var err error
		if ncA, jsA, err = bus.Connect(context.Background(), r.e.JS.Conn().ConnectedUrl(), "crashing scorer", slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		defer ncA.Close()
		blocks, err := jsA.KeyValue(context.Background(), schemas.KVActiveBlocks)
		if err != nil {
			t.Fatal(err)
		}
		saved := func() bool { // a periodic save came after some scoring
			info, err := r.store.GetInfo(context.Background(), schemas.CheckpointDevicesObject(0))
			return err == nil && info.Metadata[schemas.CheckpointMetaStreamSeq] != "0"
		}
		rows := crashingRows{ClickHouse: r.e.CH, crash: &crashed, rows: new(atomic.Int64), at: int64(half), ready: saved}
		a = r.startOn(t, false, jsA, rows, sink.NewNATSPublisher(jsA, blocks, slog.New(slog.DiscardHandler)))
	}
	deadline := time.Now().Add(5 * time.Minute) // a hang bound
	next, lastSave, lastPub := first, "", time.Now()
	for !crash && a.p.M.Events.Load() < half || crash && !crashed.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("the first scorer scored only %d events", a.p.M.Events.Load())
		}
		if crash && next < len(msgs) {
			// A save comes only after a fetch: one message after each save
			// (or every two seconds, when none comes).
			info, err := r.store.GetInfo(context.Background(), schemas.CheckpointDevicesObject(0))
			if err == nil && info.NUID != lastSave || time.Since(lastPub) > 2*time.Second {
				if err == nil {
					lastSave = info.NUID
				}
				r.ingest(t, msgs[next:next+1], next)
				next, lastPub = next+1, time.Now()
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the scorer's progress
	}
	if !crash {
		a.stopClean(t)
	} else {
		ncA.Close() // no more acks, publishes, pulls or keep-alives
		a.crash()
		a.stop()
		<-a.done // a drain that cannot finish: its error is the crash's
		a.h.Close()
	}
	if next < len(msgs) {
		r.ingest(t, msgs[next:], next)
	}
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
	got := r.e.Outcome(t)
	scoredB := b.p.M.Events.Load()
	t.Logf("redelivered and acked without judging: a %d, b %d", a.p.M.RedeliveredDone.Load(), b.p.M.RedeliveredDone.Load())
	t.Logf("%d events: a scored %d, b %d (%d caught up); b owned all 8 partitions %.2fs after a stopped; %d takeovers, the last took %.3fs",
		r.ingested, scoredA, scoredB, b.p.M.CaughtUp.Load(), owned.Seconds(), n, last.Seconds())

	if scoredA == 0 || scoredA >= r.ingested || scoredB == 0 {
		t.Errorf("scored: a %d, b %d of %d: want both some, a not all", scoredA, scoredB, r.ingested)
	}
	// Events (stream_seq > 0) and the sweep's synthetic silence rows
	// (stream_seq = 0) apart: a worker's sweep window is its own, not a
	// partition's, so after a crash a silence that falls between the
	// restored save and the catch-up of another partition can be passed
	// over (a known gap, logged; see Handover). Under -race on a loaded
	// machine they differ between undisturbed runs too (3 and 23 seen).
	for _, kind := range []struct {
		name, where string
		strict      bool
	}{{"events", schemas.ColStreamSeq + " > 0", true}, {"silence rows", schemas.ColStreamSeq + " = 0", false}} {
		_, wantN, _ := ref.scoredCounts(t, kind.where)
		raw, final, distinct := r.scoredCounts(t, kind.where)
		missing := r.missing(t, ref.e.DB, kind.where)
		switch {
		case raw == wantN && final == wantN && distinct == wantN && missing == 0:
			t.Logf("scored %s: raw = FINAL = distinct = %d, as undisturbed", kind.name, raw)
		case kind.strict:
			t.Errorf("scored %s: raw %d, FINAL %d, distinct %d, %d of the undisturbed run's missing; want %d each, none missing",
				kind.name, raw, final, distinct, missing, wantN)
		default:
			t.Logf("KNOWN GAP: scored %s: raw %d, FINAL %d, distinct %d, %d of the undisturbed run's missing; undisturbed %d",
				kind.name, raw, final, distinct, missing, wantN)
		}
	}
	// Alerts. After a clean stop (a quiesced: it scored what its pulls
	// delivered, then drained and saved), b restores each partition at a's
	// position with nothing to catch up and judges every event in the
	// stream's order against a's state: the alerts are the undisturbed
	// run's, exactly. After a crash, b catches each partition up from a's
	// last periodic save to its first message, one partition after the
	// other, ahead of the other partitions' messages before them in the
	// stream: per device the order holds, but what spans partitions (the
	// class statistics, the calibration, an engine's clock) sees another
	// order than one instance, so an alert near its threshold can come out
	// either way (bench/RESULTS.md, h1: 1 extra and 1 missing of 29 in one
	// crash run under -race). There, up to a tenth (at least 2) is logged
	// as that known gap; more fails.
	allowed := 0
	if crash {
		allowed = max(2, len(want.Alerts)/10)
	}
	if extra, missing := idDiff(got.Alerts, want.Alerts), idDiff(want.Alerts, got.Alerts); len(extra)+len(missing) > allowed {
		testids.Compare(t, "alerts", "after the handover", got.Alerts, want.Alerts)
	} else if len(extra)+len(missing) > 0 {
		t.Logf("KNOWN GAP: alerts: %d after the handover, %d undisturbed: %d not undisturbed %q, %d missing %q (the crash's catch-up order across partitions)",
			len(got.Alerts), len(want.Alerts), len(extra), extra, len(missing), missing)
	}
	testids.Compare(t, "decisions", "after the handover", got.Decisions, want.Decisions)
	if len(want.Alerts) == 0 {
		t.Error("the undisturbed run raised no alert: the comparison proves nothing")
	}
	t.Logf("%d alerts, %d decisions (undisturbed: %d, %d)", len(got.Alerts), len(got.Decisions), len(want.Alerts), len(want.Decisions))
}

type testWriter struct{ t *testing.T }

func (w *testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

// ensurePresence creates the 8 partition consumers and returns the scorers'
// presence bucket.
func ensurePresence(ctx context.Context, js jetstream.JetStream, scfg bus.StreamsConfig, pinnedTTL time.Duration) (jetstream.KeyValue, error) {
	_, presence, _, err := bus.EnsurePartitions(ctx, js, scfg, 8, pinnedTTL)
	return presence, err
}

// idDiff returns the ids of a (sorted) not in b (sorted).
func idDiff(a, b []string) []string {
	var out []string
	for _, id := range a {
		if _, ok := slices.BinarySearch(b, id); !ok {
			out = append(out, id)
		}
	}
	return out
}

// TestTakeoverJudgesWhatWasLeftUnacked: messages a previous owner was
// delivered and never acked (it crashed with them in hand, or they went to
// a pull of its that had given up) come back to the next owner after their
// ack wait, after later messages of their partition. The next owner must
// judge them, once: here the "previous owner" is a pull of the first 10
// messages of every partition that gives the first 5 back and never acks
// the others, and the scorer that acquires the partitions right after it
// must store a row for every event. (Before the fix, the scorer acked the
// 5 unacked ones without judging them, as at or below the last message of
// their partition it had dispatched: 200 of 4,271 events had no row.)
func TestTakeoverJudgesWhatWasLeftUnacked(t *testing.T) {
	msgs := pipetest.FleetMessages(t, 60, time.Hour)
	r := newHandoverRig(t, "handover_unacked", msgs, 15*time.Second)
	ctx := context.Background()
	held := 0
	for p := range 8 {
		cons, err := r.e.JS.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p))
		if err != nil {
			t.Fatal(err)
		}
		b, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(schemas.ScorerGroup))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			// The first half given back (nak: redelivered at once, the next
			// owner's first message), the rest never acked: redelivered
			// after the ack wait, after later messages.
			if n++; n <= 5 {
				if err := m.Nak(); err != nil {
					t.Fatal(err)
				}
				continue
			}
			held++
		}
		if err := r.events.UnpinConsumer(ctx, schemas.ScorerConsumer(p), schemas.ScorerGroup); err != nil {
			t.Fatal(err)
		}
	}
	if held == 0 {
		t.Fatal("the previous owner was delivered nothing")
	}
	s := r.start(t, false)
	r.waitDone(t, s)
	s.stopClean(t)
	raw, final, distinct := r.scoredCounts(t, schemas.ColStreamSeq+" > 0")
	t.Logf("%d messages left unacked; %d events: rows raw %d, FINAL %d, distinct %d; %d caught up, %d redeliveries acked as done",
		held, r.ingested, raw, final, distinct, s.p.M.CaughtUp.Load(), s.p.M.RedeliveredDone.Load())
	if raw != r.ingested || final != r.ingested || distinct != r.ingested {
		t.Errorf("scored rows: raw %d, FINAL %d, distinct %d; want %d each (every event judged once)", raw, final, distinct, r.ingested)
	}
}
