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
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// handoverRuns counts the runs of TestHandoverResumesPartitions (fresh
// databases for -count).
var handoverRuns int

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
	one := ref.Start(t, true)
	ref.WaitDone(t, one)
	one.StopClean(t)
	want := ref.Env.Outcome(t)

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
		r.CheckpointEvery = time.Second // the restart restores the last periodic save
		r.DrainTimeout = 10 * time.Second
	}
	half := r.Ingested / 2
	var a *pipetest.Scorer
	var crashed atomic.Bool
	var ncA *nats.Conn
	if !crash {
		a = r.Start(t, false)
	} else {
		var jsA jetstream.JetStream
		var err error
		if ncA, jsA, err = bus.Connect(context.Background(), r.Env.JS.Conn().ConnectedUrl(), "crashing scorer", slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		defer ncA.Close()
		blocks, err := jsA.KeyValue(context.Background(), schemas.KVActiveBlocks)
		if err != nil {
			t.Fatal(err)
		}
		saved := func() bool { // a periodic save came after some scoring
			info, err := r.Store.GetInfo(context.Background(), schemas.CheckpointDevicesObject(0))
			return err == nil && info.Metadata[schemas.CheckpointMetaStreamSeq] != "0"
		}
		rows := crashingRows{ClickHouse: r.Env.CH, crash: &crashed, rows: new(atomic.Int64), at: int64(half), ready: saved}
		a = r.StartOn(t, false, jsA, rows, sink.NewNATSPublisher(jsA, blocks, slog.New(slog.DiscardHandler)))
	}
	stall := pipetest.NewProgress(3 * time.Minute) // a hang bound: no event scored for 3 minutes
	next, lastSave, lastPub := first, "", time.Now()
	for !crash && a.P.M.Events.Load() < half || crash && !crashed.Load() {
		if stall.Stalled(uint64(a.P.M.Events.Load())) {
			t.Fatalf("the first scorer scored only %d events, none for 3 minutes", a.P.M.Events.Load())
		}
		if crash && next < len(msgs) {
			// A save comes only after a fetch: one message after each save
			// (or every two seconds, when none comes).
			info, err := r.Store.GetInfo(context.Background(), schemas.CheckpointDevicesObject(0))
			if err == nil && info.NUID != lastSave || time.Since(lastPub) > 2*time.Second {
				if err == nil {
					lastSave = info.NUID
				}
				r.Ingest(t, msgs[next:next+1], next)
				next, lastPub = next+1, time.Now()
			}
		}
		time.Sleep(5 * time.Millisecond) // polling the scorer's progress
	}
	if !crash {
		a.StopClean(t)
	} else {
		ncA.Close() // no more acks, publishes, pulls or keep-alives
		a.Crash()
		a.Stop()
		<-a.Done // a drain that cannot finish: its error is the crash's
		a.H.Close()
	}
	if next < len(msgs) {
		r.Ingest(t, msgs[next:], next)
	}
	scoredA := a.P.M.Events.Load()
	stopped := time.Now()
	b := r.Start(t, false)
	deadline := time.Now().Add(5 * time.Minute) // a hang bound on ownership
	for len(b.C.Owned()) < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("the second scorer owns only %v", b.C.Owned())
		}
		time.Sleep(5 * time.Millisecond) // polling ownership
	}
	owned := time.Since(stopped)
	r.WaitDone(t, b)
	n, last := b.H.Takeovers()
	b.StopClean(t)
	got := r.Env.Outcome(t)
	scoredB := b.P.M.Events.Load()
	t.Logf("redelivered and acked without judging: a %d, b %d", a.P.M.RedeliveredDone.Load(), b.P.M.RedeliveredDone.Load())
	t.Logf("%d events: a scored %d, b %d (%d caught up); b owned all 8 partitions %.2fs after a stopped; %d takeovers, the last took %.3fs",
		r.Ingested, scoredA, scoredB, b.P.M.CaughtUp.Load(), owned.Seconds(), n, last.Seconds())

	if scoredA == 0 || scoredA >= r.Ingested || scoredB == 0 {
		t.Errorf("scored: a %d, b %d of %d: want both some, a not all", scoredA, scoredB, r.Ingested)
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
		_, wantN, _ := ref.ScoredCounts(t, kind.where)
		raw, final, distinct := r.ScoredCounts(t, kind.where)
		missing := r.Missing(t, ref.Env.DB, kind.where)
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
		cons, err := r.Env.JS.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p))
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
		if err := r.Events.UnpinConsumer(ctx, schemas.ScorerConsumer(p), schemas.ScorerGroup); err != nil {
			t.Fatal(err)
		}
	}
	if held == 0 {
		t.Fatal("the previous owner was delivered nothing")
	}
	s := r.Start(t, false)
	r.WaitDone(t, s)
	s.StopClean(t)
	raw, final, distinct := r.ScoredCounts(t, schemas.ColStreamSeq+" > 0")
	t.Logf("%d messages left unacked; %d events: rows raw %d, FINAL %d, distinct %d; %d caught up, %d redeliveries acked as done",
		held, r.Ingested, raw, final, distinct, s.P.M.CaughtUp.Load(), s.P.M.RedeliveredDone.Load())
	if raw != r.Ingested || final != r.Ingested || distinct != r.Ingested {
		t.Errorf("scored rows: raw %d, FINAL %d, distinct %d; want %d each (every event judged once)", raw, final, distinct, r.Ingested)
	}
}
