package takeover_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestPinMovedDuringAFlushIsWrittenOnce: the server moves partition 0's pin
// from a live scorer a to scorer b (as a consumer leader's re-election
// does: the new leader forgets the pin and pins the next waiting pull)
// while a's flush of events it judged, partition 0's among them, is in
// flight (held by the test). b must not read what is stored before a has
// released the partition (its Lost: the held flush durable, the partition
// saved): else b finds none of those events stored, writes them in its
// catch-up, and a's flush lands after, and the same events have rows
// written by both (TestClusterKills C12, bench/RESULTS.md w4: 1,015
// events). Counted through a non-replacing view of every insert.
//
// Before the fix (b restored a's last periodic save at once), b's catch-up
// wrote again the events of a's held flush.
func TestPinMovedDuringAFlushIsWrittenOnce(t *testing.T) {
	const ackWait = time.Minute // longer than the rig's PinnedTTL, as the fence needs
	msgs := pipetest.FleetMessages(t, 150, 3*time.Hour)
	takeoverRuns++
	half := len(msgs) / 2
	r := newHandoverRig(t, fmt.Sprintf("pinmove_%d", takeoverRuns), msgs[:half], ackWait)
	createInsertsView(t, r)
	r.CheckpointEvery = time.Second
	r.Rebalance = -1 // b pulls every partition from its start; a releases none
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Minute) // a hang bound

	rowsA := &heldRows{countingRows: countingRows{ClickHouse: r.Env.CH}, release: make(chan struct{})}
	a := r.StartOn(t, false, r.Env.JS, rowsA, r.Env.Pub)
	r.WaitDone(t, a)
	// a's periodic save of partition 0, the object b restores. A periodic
	// save comes after a fetch, at most once a second: one message at a
	// time until there is one.
	next := half
	for saved := false; !saved; next++ {
		if time.Now().After(deadline) || next == len(msgs) {
			t.Fatalf("the first scorer saved no checkpoint of partition 0 (%d messages fed)", next-half)
		}
		r.Ingest(t, msgs[next:next+1], next)
		r.WaitDone(t, a)
		for wait := time.Now().Add(1500 * time.Millisecond); !saved && time.Now().Before(wait); {
			_, err := r.Store.GetInfo(ctx, schemas.CheckpointDevicesObject(0))
			saved = err == nil
			time.Sleep(10 * time.Millisecond) // polling the store; the next message makes a save due
		}
	}
	rowsA.hold.Store(true)
	// The last tenth comes after the pin moved: a pull is pinned when the
	// server has a message for it.
	last := len(msgs) - len(msgs)/10
	r.Ingest(t, msgs[next:last], next)
	for !rowsA.holding.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the first scorer wrote no rows of the second half")
		}
		time.Sleep(10 * time.Millisecond) // polling the writer
	}

	cons, err := r.Env.JS.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(0))
	if err != nil {
		t.Fatal(err)
	}
	waitingBefore := numWaiting(t, cons)
	rowsB := &countingRows{ClickHouse: r.Env.CH}
	b := r.StartOn(t, false, r.Env.JS, rowsB, r.Env.Pub)
	// b is short of its share: its pull of partition 0 waits at the server.
	for numWaiting(t, cons) <= waitingBefore {
		if time.Now().After(deadline) {
			t.Fatal("the second scorer sent no pull of partition 0")
		}
		time.Sleep(10 * time.Millisecond) // polling the server
	}
	// The pin moves: a's next pull of partition 0 is refused, b's waiting
	// pull is pinned.
	if err := r.Events.UnpinConsumer(ctx, schemas.ScorerConsumer(0), schemas.ScorerGroup); err != nil {
		t.Fatal(err)
	}
	r.Ingest(t, msgs[last:], last)
	// b has acquired partition 0 and either waits for a's release or has
	// restored and caught up; then a's held flush lands.
	for {
		n, _ := b.H.Takeovers()
		if n > 0 || b.P.M.HandoverWaits.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second scorer did not acquire partition 0; it owns %v", b.C.Owned())
		}
		time.Sleep(10 * time.Millisecond) // polling the takeover
	}
	heldRowsAt := rowsA.scored.Load()
	close(rowsA.release)

	r.WaitDone(t, b)
	a.StopClean(t) // the rest of a's partitions go to b
	r.WaitDone(t, b)
	b.StopClean(t)

	inserted := r.Query(t, fmt.Sprintf("SELECT count() FROM %s.%s WHERE %s > 0", r.Env.DB, insertsView, schemas.ColStreamSeq))
	_, final, distinct := r.ScoredCounts(t, schemas.ColStreamSeq+" > 0")
	t.Logf("a wrote %d rows (%d before its held flush), b %d; b caught up %d events, %d stored already; b waited for a's release %d times (%d given up); "+
		"event rows inserted %d, FINAL %d, distinct %d, ingested %d",
		rowsA.scored.Load(), heldRowsAt, rowsB.scored.Load(), b.P.M.CaughtUp.Load(), b.P.M.CatchUpStored.Load(),
		b.P.M.HandoverWaits.Load(), b.P.M.HandoverWaitsGivenUp.Load(), inserted, final, distinct, r.Ingested)
	if rowsA.scored.Load() == heldRowsAt {
		t.Fatal("a's held flush wrote nothing: the test proves nothing")
	}
	if final != r.Ingested || distinct != r.Ingested {
		t.Errorf("event rows: FINAL %d, distinct %d; want %d each", final, distinct, r.Ingested)
	}
	if inserted != distinct {
		t.Errorf("event rows inserted %d for %d events: %d written by both scorers", inserted, distinct, inserted-distinct)
	}
}

// numWaiting returns the pulls waiting at the server on cons.
func numWaiting(t *testing.T, cons jetstream.Consumer) int {
	t.Helper()
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumWaiting
}

// heldRows is countingRows whose scored-row writes, once hold is set, wait
// until release is closed.
type heldRows struct {
	countingRows
	hold, holding atomic.Bool
	release       chan struct{}
}

func (h *heldRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	if h.hold.Load() {
		h.holding.Store(true)
		select {
		case <-h.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return h.countingRows.WriteScored(ctx, rec)
}
