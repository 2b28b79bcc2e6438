package pipeline

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// lockedGate is a ClassGate whose limit the test moves; it counts Holds.
type lockedGate struct {
	mu    sync.Mutex
	limit int64
	holds int
}

func (g *lockedGate) Learned(int64, bool) {}
func (g *lockedGate) Limit() (int64, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit, false
}
func (g *lockedGate) Hold(ctx context.Context, wait time.Duration) {
	g.mu.Lock()
	g.holds++
	g.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-time.After(wait): // the poll of a holding pipeline
	}
}
func (g *lockedGate) set(limit int64) {
	g.mu.Lock()
	g.limit = limit
	g.mu.Unlock()
}
func (g *lockedGate) held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holds
}

// rowLog is a RowWriter that records the events whose rows are written,
// and a WrittenReader that says the events of stored are stored.
type rowLog struct {
	mu      sync.Mutex
	written map[uint64]int
	stored  map[uint64]bool
}

func (r *rowLog) WriteScored(_ context.Context, rec arrow.RecordBatch) error {
	idx := rec.Schema().FieldIndices(schemas.ColEventID)
	ids := rec.Column(idx[0]).(*array.Uint64)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range ids.Len() {
		r.written[ids.Value(i)]++
	}
	return nil
}
func (r *rowLog) WriteAlerts(context.Context, []schemas.Alert) error       { return nil }
func (r *rowLog) WriteDecisions(context.Context, []schemas.Decision) error { return nil }
func (r *rowLog) WriteIncidents(context.Context, []schemas.Incident) error { return nil }
func (r *rowLog) Written(_ context.Context, events []uint64, _, _ int64) (Written, error) {
	var w Written
	for _, id := range events {
		if r.stored[id] {
			w.Events = append(w.Events, id)
		}
	}
	return w, nil
}

// count returns how many times each of ids was written, in all.
func (r *rowLog) count(ids []uint64) (events, rows int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if n := r.written[id]; n > 0 {
			events++
			rows += n
		}
	}
	return events, rows
}

type nopPublisher struct{}

func (nopPublisher) PublishAlerts(context.Context, []schemas.Alert) error       { return nil }
func (nopPublisher) PublishDecisions(context.Context, []schemas.Decision) error { return nil }
func (nopPublisher) PublishIncidents(context.Context, []schemas.Incident) error { return nil }
func (nopPublisher) DeadLetters(context.Context, string, uint64, []schemas.DeadLetter) error {
	return nil
}

// takeoverSource is a partition Source whose consumer has delivered up to
// delivered, the first message under the new pin a redelivery, and which
// hands on the messages the test queues.
type takeoverSource struct {
	delivered uint64
	queued    chan jetstream.Msg
}

func (s *takeoverSource) Fetch(n int, _ ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	out := make(chan jetstream.Msg, n)
	select {
	case m := <-s.queued:
		out <- m
	case <-time.After(10 * time.Millisecond): // an empty fetch's wait
	}
	for len(out) < n {
		select {
		case m := <-s.queued:
			out <- m
			continue
		default:
		}
		break
	}
	close(out)
	return fetched(out), nil
}
func (s *takeoverSource) Info(context.Context) (*jetstream.ConsumerInfo, error) {
	return &jetstream.ConsumerInfo{}, nil
}
func (s *takeoverSource) FirstRedelivered(int) bool { return true }
func (s *takeoverSource) PartitionInfo(context.Context, int) (*jetstream.ConsumerInfo, error) {
	return &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: s.delivered}}, nil
}

type fetched chan jetstream.Msg

func (f fetched) Messages() <-chan jetstream.Msg { return f }
func (f fetched) Error() error                   { return nil }

// TestTakeoverReplayIsGated: a partition's new owner re-learns in its
// catch-up the messages its previous owner judged (up to the last one with
// a stored row: 4 of 12, not written again), and judges the messages
// delivered to the previous owner that it never judged (5-12) through the
// class gate, as fetched messages: while the gate's limit is at message
// 7's events, nothing past message 8 (the limit plus the one message
// admit's estimate lets through) is judged; once the limit moves, the rest
// is, each event once, and the consumer's redeliveries of messages 9 and
// 10 are not judged a second time. (Before the replay, the catch-up judged
// 5-12 at once, whatever the limit.)
func TestTakeoverReplayIsGated(t *testing.T) {
	const partitions, part, perMsg, msgs, stored = 4, 1, 5, 12, 4
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang bound
	defer cancel()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatalf("cannot start the embedded NATS server: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	nc, js, err := bus.Connect(ctx, ns.URL(), "replay-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	scfg := bus.DefaultStreamsConfig()
	if _, err := bus.EnsureIngest(ctx, js, scfg); err != nil {
		t.Fatal(err)
	}
	st, err := bus.EnsureCheckpoints(ctx, js, scfg)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}

	// Partition 1's events, perMsg a message, message i's at t0 + i*10 min.
	simCfg := sim.DefaultConfig()
	simCfg.Devices, simCfg.Duration, simCfg.Attacks = 40, 24*time.Hour, false
	s, err := sim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	var dec schemas.Decoder
	ids := make([][]uint64, msgs+1) // by stream sequence
	lastTime := make([]int64, msgs+1)
	batch := schemas.NewEventBatch(nil)
	for seq, line := 1, 0; seq <= msgs; line++ {
		l, _, ok := s.Next(nil)
		if !ok {
			t.Fatal("the simulator ran out of events")
		}
		var ev schemas.Event
		if err := dec.Decode(l, uint64(seq), uint32(line), 0, &ev); err != nil || schemas.PartitionOf(ev.DeviceAlt, partitions) != part {
			continue
		}
		ev.Time = t0 + int64(seq)*int64(10*time.Minute) + int64(len(ids[seq]))*int64(time.Second)
		batch.Append(&ev)
		ids[seq], lastTime[seq] = append(ids[seq], ev.ID), ev.Time
		if len(ids[seq]) == perMsg {
			data, err := batch.AppendIPC(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, schemas.EventsSubject(part), data); err != nil {
				t.Fatal(err)
			}
			seq, line = seq+1, 0
		}
	}
	idsOf := func(from, to int) []uint64 { return slices.Concat(ids[from : to+1]...) }

	rows := &rowLog{written: map[uint64]int{}, stored: map[uint64]bool{}}
	for _, id := range idsOf(1, stored) {
		rows.stored[id] = true // the previous owner judged messages 1-4
	}
	src := &takeoverSource{delivered: msgs, queued: make(chan jetstream.Msg, msgs)}
	p, err := New(Config{Workers: 2, CheckpointStore: st, Partitions: partitions, PartitionOwnership: true, Stream: stream,
		FlushInterval: 20 * time.Millisecond}, src, rows, nopPublisher{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	gate := &lockedGate{limit: lastTime[7]}
	p.GateClasses(gate)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- p.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
	}()

	if err := p.RestorePartition(ctx, part, 0); err != nil { // the source says what was delivered
		t.Fatal(err)
	}
	settle := func() {
		t.Helper()
		if err := p.SavePartition(ctx, part); err != nil { // every result dispatched before it is written
			t.Fatal(err)
		}
	}
	settle()
	for gate.held() == 0 {
		if n, _ := rows.count(idsOf(stored+1, msgs)); n == len(idsOf(stored+1, msgs)) {
			break // judged at once
		}
		if ctx.Err() != nil {
			t.Fatal("the pipeline neither held nor judged the partition's messages")
		}
		time.Sleep(10 * time.Millisecond) // polling the condition
	}
	settle()
	if n, _ := rows.count(idsOf(1, stored)); n != 0 {
		t.Errorf("%d events of the messages the previous owner stored were written again", n)
	}
	if n, _ := rows.count(idsOf(stored+1, 8)); n != len(idsOf(stored+1, 8)) {
		t.Errorf("while held at message 7's events: %d of messages 5-8's %d events judged, want all", n, len(idsOf(stored+1, 8)))
	}
	if n, _ := rows.count(idsOf(9, msgs)); n != 0 {
		t.Errorf("while held at message 7's events (%s): %d events of messages 9-12 judged, want none (judged outside the gate)",
			time.Unix(0, lastTime[7]).UTC().Format(time.TimeOnly), n)
	}

	// The consumer redelivers messages 9 and 10 (the previous owner's,
	// unacked), then the limit moves.
	cons, err := js.CreateConsumer(ctx, schemas.StreamEvents, jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: 9, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: schemas.EventsSubject(part)})
	if err != nil {
		t.Fatal(err)
	}
	again, err := cons.FetchNoWait(2)
	if err != nil {
		t.Fatal(err)
	}
	for m := range again.Messages() {
		src.queued <- m
	}
	gate.set(math.MaxInt64 - 1)
	want := idsOf(stored+1, msgs)
	for {
		if n, _ := rows.count(want); n == len(want) {
			break
		}
		if ctx.Err() != nil {
			n, _ := rows.count(want)
			t.Fatalf("after the limit moved: %d of messages 5-12's %d events judged", n, len(want))
		}
		time.Sleep(10 * time.Millisecond) // polling the condition
	}
	settle()
	if n, r := rows.count(want); r != n {
		t.Errorf("messages 5-12: %d rows for %d events, want one each (a redelivery judged again)", r, n)
	}
	if got := p.M.Replayed.Load(); got != uint64(len(want)) {
		t.Errorf("replayed %d events, want %d", got, len(want))
	}
	if got := p.M.RedeliveredDone.Load(); got != 2 {
		t.Errorf("%d redeliveries acked unjudged, want 2 (messages 9 and 10)", got)
	}
}
