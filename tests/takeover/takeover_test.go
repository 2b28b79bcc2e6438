package takeover_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestTakeoverDoesNotWriteAgain: a partition owner that stored results
// after its last checkpoint and was then killed leaves them to its
// successor, which restores that checkpoint and judges those events again
// (to learn what they taught the killed owner's records) without writing
// them again: every event row, alert row and decision row is written once
// in all (counted through a non-replacing view of every insert, and by the
// writers), and the alerts and decisions are the undisturbed run's.
//
// Before the fix, the successor wrote again every row, alert and decision
// of the events after the checkpoint (in the 3-node cluster test, 13,804
// and 1,433 events written by two instances).
func TestTakeoverDoesNotWriteAgain(t *testing.T) { testTakeoverWrites(t, killedAfterItsResults) }

// TestTakeoverWritesAgainWithoutClickHouse: as TestTakeoverDoesNotWriteAgain,
// but the successor cannot ask ClickHouse which events are stored at the
// takeover: it writes their results again (the same ids: FINAL and the
// distinct ids are still exact), and counts them
// (pipeline.Metrics.CatchUpUnchecked).
func TestTakeoverWritesAgainWithoutClickHouse(t *testing.T) { testTakeoverWrites(t, lookupFails) }

// TestTakeoverOfANeverSavedPartition: as TestTakeoverDoesNotWriteAgain, but
// the killed owner never saved a checkpoint (killed before its first): the
// successor learns the partitions from the stream's start, without writing
// again what the killed owner stored. (Before, it cold-started from the
// partitions' ack floors: in a run of the 3-node cluster test, whose
// killed scorer had stored 17,100 events and saved nothing, 6 alerts of 25
// were not the one-instance run's and 10 were missing.)
func TestTakeoverOfANeverSavedPartition(t *testing.T) { testTakeoverWrites(t, neverSaved) }

// TestTakeoverWritesTheAlertsOfACutFlush: as TestTakeoverDoesNotWriteAgain,
// but the first scorer is killed while its flusher writes a job's alerts
// (held until the kill). The flusher writes a job's alerts and decisions
// before its rows, so the job's events have no row stored: the successor's
// catch-up judges them again as not stored and writes their rows, the cut
// alerts and their decisions, and the outcome is the undisturbed run's.
// Before (rows first), the job's rows were stored without its alerts; the
// successor kept the stored judgement of those events and dropped the
// alerts (a judging again that differs must not invent one, see
// TestTakeoverOfANeverSavedPartition), so they were lost from ClickHouse
// (lock-000006 in the 3-node cluster test, bench/RESULTS.md w1).
func TestTakeoverWritesTheAlertsOfACutFlush(t *testing.T) {
	testTakeoverWrites(t, killedWritingAlerts)
}

// takeoverFault is how a takeover test's first scorer dies, or its
// successor's look-up fails.
type takeoverFault int

const (
	killedAfterItsResults takeoverFault = iota // every result stored and acked, no checkpoint after
	lookupFails                                // as killedAfterItsResults; the successor cannot ask ClickHouse
	neverSaved                                 // as killedAfterItsResults, no checkpoint ever saved
	killedWritingAlerts                        // killed while a job's alerts are written
)

// takeoverRuns counts the takeover tests' runs (fresh databases for
// -count).
var takeoverRuns int

// takeoverRef is the takeover tests' undisturbed one-instance run of their
// fleet: the three tests share one fleet, so it runs once (it is most of a
// test's time under -race).
var takeoverRef struct {
	done       bool
	msgs       [][]byte
	want       pipetest.Outcome
	wantEvents uint64
}

func undisturbedTakeoverRun(t *testing.T, ackWait time.Duration) ([][]byte, pipetest.Outcome, uint64) {
	if !takeoverRef.done {
		msgs := pipetest.FleetMessages(t, 150, 3*time.Hour)
		ref := newHandoverRig(t, "takeover_ref", msgs, ackWait)
		one := ref.Start(t, true)
		ref.WaitDone(t, one)
		one.StopClean(t)
		want := ref.Env.Outcome(t)
		_, wantEvents, _ := ref.ScoredCounts(t, schemas.ColStreamSeq+" > 0")
		takeoverRef.msgs, takeoverRef.want, takeoverRef.wantEvents, takeoverRef.done = msgs, want, wantEvents, true
	}
	return takeoverRef.msgs, takeoverRef.want, takeoverRef.wantEvents
}

func testTakeoverWrites(t *testing.T, fault takeoverFault) {
	const ackWait = 5 * time.Second
	msgs, want, wantEvents := undisturbedTakeoverRun(t, ackWait)
	takeoverRuns++

	// The fleet in thirds: a scores the first and saves a checkpoint after
	// it; its checkpoints then fail (frozen) while it scores and stores the
	// second, all of it acked; then it is killed. b takes every partition
	// over, restores the checkpoint, catches up the second third, and
	// scores the last.
	third := len(msgs) / 3
	r := newHandoverRig(t, fmt.Sprintf("takeover_%d", takeoverRuns), msgs[:third], ackWait)
	createInsertsView(t, r)
	r.CheckpointEvery = time.Second
	r.DrainTimeout = 10 * time.Second
	var frozen, hang atomic.Bool
	var globals atomic.Int64
	frozen.Store(fault == neverSaved)
	r.WrapStore = func(s jetstream.ObjectStore) jetstream.ObjectStore {
		return frozenStore{ObjectStore: s, frozen: &frozen, globals: &globals}
	}
	ncA, jsA, err := bus.Connect(context.Background(), r.Env.JS.Conn().ConnectedUrl(), "killed scorer", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ncA.Close()
	blocks, err := jsA.KeyValue(context.Background(), schemas.KVActiveBlocks)
	if err != nil {
		t.Fatal(err)
	}
	rowsA := &countingRows{ClickHouse: r.Env.CH, hang: &hang}
	a := r.StartOn(t, false, jsA, rowsA, sink.NewNATSPublisher(jsA, blocks, slog.New(slog.DiscardHandler)))
	r.WaitDone(t, a)
	// A periodic save comes after a fetch, at most once a second: one
	// message at a time until a save ends, then no more saves.
	deadline := time.Now().Add(5 * time.Minute) // a hang bound
	next := third
	for saved := globals.Load(); fault != neverSaved && globals.Load() == saved; next++ {
		if time.Now().After(deadline) || next == 2*third {
			t.Fatalf("the first scorer saved no checkpoint (%d messages fed)", next-third)
		}
		r.Ingest(t, msgs[next:next+1], next)
		r.WaitDone(t, a)
		for wait := time.Now().Add(1500 * time.Millisecond); globals.Load() == saved && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond) // polling for the save; the next message makes one due
		}
	}
	frozen.Store(true)
	atCheckpoint := rowsA.scored.Load()
	if fault == neverSaved {
		atCheckpoint = 0
	}
	// Held from the first write of alerts after a's first rows past the
	// checkpoint (a job's alerts come before its rows: a cut of the first
	// job would leave b nothing stored to leave out).
	rowsA.holdAfter.Store(atCheckpoint)
	rowsA.holdAlerts.Store(fault == killedWritingAlerts)
	r.Ingest(t, msgs[next:2*third], next)
	if fault != killedWritingAlerts {
		r.WaitDone(t, a) // stored and acked, after the checkpoint
	} else {
		// The first job with alerts after the checkpoint: its alerts' write
		// hangs until the kill, and so does every write after it.
		for rowsA.held() == nil {
			if time.Now().After(deadline) {
				t.Fatal("the first scorer stored no alert after its checkpoint: the test proves nothing")
			}
			time.Sleep(10 * time.Millisecond) // polling the writer
		}
	}
	pastCheckpoint := rowsA.scored.Load() - atCheckpoint
	hang.Store(true)
	ncA.Close() // killed: no more acks, publishes, pulls or saves
	a.Crash()
	a.Stop()
	<-a.Done
	a.H.Close()
	if pastCheckpoint == 0 {
		t.Fatal("the first scorer stored no row after its checkpoint: the test proves nothing")
	}

	r.Ingest(t, msgs[2*third:], 2*third)
	rowsB := &countingRows{ClickHouse: r.Env.CH}
	if fault == neverSaved {
		if _, err := r.Store.GetInfo(context.Background(), schemas.CheckpointDevicesObject(0)); err == nil {
			t.Fatal("the first scorer saved a checkpoint: the test froze them from its start")
		}
	}
	if fault == lookupFails {
		rowsB.lookupErr = errors.New("the test's ClickHouse is unreachable at the takeover")
	}
	b := r.StartOn(t, false, r.Env.JS, rowsB, r.Env.Pub)
	for len(b.C.Owned()) < 8 {
		if time.Now().After(deadline) {
			t.Fatalf("the second scorer owns only %v", b.C.Owned())
		}
		time.Sleep(5 * time.Millisecond) // polling ownership
	}
	r.WaitDone(t, b)
	b.StopClean(t)
	got := r.Env.Outcome(t)

	inserted := r.Query(t, fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s > 0", r.Env.DB, insertsView, schemas.ColStreamSeq))
	_, final, distinct := r.ScoredCounts(t, schemas.ColStreamSeq+" > 0")
	stored, unchecked := b.P.M.CatchUpStored.Load(), b.P.M.CatchUpUnchecked.Load()
	t.Logf("a stored %d rows after its checkpoint; b caught up %d events, %d of them stored already, %d unchecked; "+
		"event rows inserted %d, FINAL %d, distinct %d (undisturbed %d); alert rows written a %d + b %d, decision rows a %d + b %d; "+
		"b dropped %d alerts and decisions raised again for stored events",
		pastCheckpoint, b.P.M.CaughtUp.Load(), stored, unchecked, inserted, final, distinct, wantEvents,
		rowsA.alerts.Load(), rowsB.alerts.Load(), rowsA.decisions.Load(), rowsB.decisions.Load(),
		b.P.M.CatchUpDropped.Load())
	if fault == killedWritingAlerts {
		held := slices.Sorted(slices.Values(rowsA.held()))
		t.Logf("a was killed writing alerts %q", held)
		for _, id := range held {
			if _, ok := slices.BinarySearch(rowsB.alertIDs(), id); !ok {
				t.Errorf("alert %s, whose write the kill cut, was not written by b", id)
			}
		}
	}
	if final != wantEvents || distinct != wantEvents {
		t.Errorf("event rows: FINAL %d, distinct %d; want %d each", final, distinct, wantEvents)
	}
	if fault == lookupFails {
		if unchecked == 0 || stored != 0 {
			t.Errorf("without ClickHouse at the takeover: %d events unchecked, %d left out as stored; want some unchecked, none left out", unchecked, stored)
		}
		if inserted <= wantEvents {
			t.Errorf("without ClickHouse at the takeover: %d event rows inserted for %d events; want the caught-up ones written again", inserted, wantEvents)
		}
	} else {
		if inserted != wantEvents {
			t.Errorf("event rows inserted %d for %d events: %d written twice", inserted, wantEvents, inserted-wantEvents)
		}
		if stored == 0 || unchecked != 0 {
			t.Errorf("b left out %d caught-up events as stored, %d unchecked; want some left out, none unchecked", stored, unchecked)
		}
		if n := rowsA.alerts.Load() + rowsB.alerts.Load(); n != int64(len(got.Alerts)) {
			t.Errorf("alert rows written %d (a %d, b %d) for %d alerts", n, rowsA.alerts.Load(), rowsB.alerts.Load(), len(got.Alerts))
		}
		if n := rowsA.decisions.Load() + rowsB.decisions.Load(); n != int64(len(got.Decisions)) {
			t.Errorf("decision rows written %d (a %d, b %d) for %d decisions", n, rowsA.decisions.Load(), rowsB.decisions.Load(), len(got.Decisions))
		}
	}
	testids.Compare(t, "alerts", "after the takeover", got.Alerts, want.Alerts)
	testids.Compare(t, "decisions", "after the takeover", got.Decisions, want.Decisions)
	if len(want.Alerts) == 0 {
		t.Error("the undisturbed run raised no alert: the comparison proves nothing")
	}
}

// insertsView is the test's materialized view over scored_events: a plain
// MergeTree that keeps every row every insert wrote, which the
// ReplacingMergeTree's background merges would collapse out of sight.
const insertsView = "scored_inserts"

func createInsertsView(t *testing.T, r *pipetest.HandoverRig) {
	t.Helper()
	q := fmt.Sprintf("CREATE MATERIALIZED VIEW %s.%s ENGINE = MergeTree() ORDER BY (%s) AS SELECT %s, %s FROM %s.%s",
		schemas.QuoteIdent(r.Env.DB), insertsView, schemas.ColEventID, schemas.ColEventID, schemas.ColStreamSeq,
		schemas.QuoteIdent(r.Env.DB), schemas.TableScored)
	if err := r.Env.Conn.Exec(context.Background(), q); err != nil {
		t.Fatalf("cannot create the view of every insert: %v", err)
	}
}

// frozenStore is a checkpoint store whose puts fail once frozen is set; it
// counts the puts of the global object that succeeded (each ends a
// checkpoint of every owned partition).
type frozenStore struct {
	jetstream.ObjectStore
	frozen  *atomic.Bool
	globals *atomic.Int64
}

func (s frozenStore) Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	if s.frozen.Load() {
		return nil, errors.New("the test froze the checkpoints")
	}
	info, err := s.ObjectStore.Put(ctx, meta, r)
	if err == nil && meta.Name == schemas.CheckpointGlobalObject {
		s.globals.Add(1)
	}
	return info, err
}

// countingRows is the real ClickHouse writer, counting the rows it wrote
// and keeping the alert ids; once hang is set, every write waits until its
// context ends (killed); while holdAlerts is set, the first write of alerts
// once more than holdAfter rows are written (and every write after it)
// waits so. lookupErr, when set, is what Written returns (ClickHouse
// unreachable at a takeover).
type countingRows struct {
	*sink.ClickHouse
	hang                      *atomic.Bool
	holdAlerts                atomic.Bool
	holdAfter                 atomic.Int64
	scored, alerts, decisions atomic.Int64
	lookupErr                 error

	mu       sync.Mutex
	written  []string // alert ids written
	heldBack []string // alert ids of the write held
}

// held returns the ids of the alerts whose write waits (holdAlerts), nil
// before that write.
func (c *countingRows) held() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.heldBack
}

// alertIDs returns the ids of the alerts written, sorted.
func (c *countingRows) alertIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(slices.Values(c.written))
}

func (c *countingRows) hung(ctx context.Context) error {
	c.mu.Lock()
	held := c.heldBack != nil
	c.mu.Unlock()
	if !held && (c.hang == nil || !c.hang.Load()) {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (c *countingRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	if err := c.hung(ctx); err != nil {
		return err
	}
	if err := c.ClickHouse.WriteScored(ctx, rec); err != nil {
		return err
	}
	c.scored.Add(rec.NumRows())
	return nil
}

func (c *countingRows) WriteAlerts(ctx context.Context, as []schemas.Alert) error {
	ids := make([]string, len(as))
	for i := range as {
		ids[i] = as[i].ID
	}
	if c.holdAlerts.Load() && len(as) > 0 && c.scored.Load() > c.holdAfter.Load() {
		c.mu.Lock()
		if c.heldBack == nil {
			c.heldBack = ids
		}
		c.mu.Unlock()
	}
	if err := c.hung(ctx); err != nil {
		return err
	}
	if err := c.ClickHouse.WriteAlerts(ctx, as); err != nil {
		return err
	}
	c.alerts.Add(int64(len(as)))
	c.mu.Lock()
	c.written = append(c.written, ids...)
	c.mu.Unlock()
	return nil
}

func (c *countingRows) WriteDecisions(ctx context.Context, ds []schemas.Decision) error {
	if err := c.hung(ctx); err != nil {
		return err
	}
	if err := c.ClickHouse.WriteDecisions(ctx, ds); err != nil {
		return err
	}
	c.decisions.Add(int64(len(ds)))
	return nil
}

func (c *countingRows) Written(ctx context.Context, events []uint64, from, to int64) (pipeline.Written, error) {
	if c.lookupErr != nil {
		return pipeline.Written{}, c.lookupErr
	}
	return c.ClickHouse.Written(ctx, events, from, to)
}
