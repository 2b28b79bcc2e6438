package pipeline

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
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
	ackFloor  atomic.Uint64
	queued    chan jetstream.Msg
	// leaseEnded: this instance no longer holds the partition (Holds).
	leaseEnded atomic.Bool
}

func (s *takeoverSource) Holds(int) bool { return !s.leaseEnded.Load() }

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
	return &jetstream.ConsumerInfo{Delivered: jetstream.SequenceInfo{Stream: s.delivered},
		AckFloor: jetstream.SequenceInfo{Stream: s.ackFloor.Load()}}, nil
}

type fetched chan jetstream.Msg

func (f fetched) Messages() <-chan jetstream.Msg { return f }
func (f fetched) Error() error                   { return nil }

// replayRig is a pipeline with a class gate that has taken over partition
// replayPart, whose 12 messages (stream sequences 1-12, replayPerMsg events
// each, message i's at t0 + i*10 min) its previous owner was delivered: it
// stored the events of messages 1-4 and judged no other. The gate's limit is
// at message 7's last event.
type replayRig struct {
	t        *testing.T
	ctx      context.Context
	js       jetstream.JetStream
	p        *Pipeline
	gate     *lockedGate
	rows     *rowLog
	src      *takeoverSource
	ids      [][]uint64 // by stream sequence
	lastTime []int64
}

const (
	replayParts, replayPart, replayPerMsg, replayMsgs, replayStored = 4, 1, 5, 12, 4
)

func newReplayRig(t *testing.T, ctx context.Context) *replayRig {
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
	simCfg := sim.DefaultConfig()
	simCfg.Devices, simCfg.Duration, simCfg.Attacks = 40, 24*time.Hour, false
	s, err := sim.New(simCfg)
	if err != nil {
		t.Fatal(err)
	}
	r := &replayRig{t: t, ctx: ctx, js: js, ids: make([][]uint64, replayMsgs+1), lastTime: make([]int64, replayMsgs+1)}
	t0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	var dec schemas.Decoder
	batch := schemas.NewEventBatch(nil)
	for seq, line := 1, 0; seq <= replayMsgs; line++ {
		l, _, ok := s.Next(nil)
		if !ok {
			t.Fatal("the simulator ran out of events")
		}
		var ev schemas.Event
		if err := dec.Decode(l, uint64(seq), uint32(line), 0, &ev); err != nil || schemas.PartitionOf(ev.DeviceAlt, replayParts) != replayPart {
			continue
		}
		ev.Time = t0 + int64(seq)*int64(10*time.Minute) + int64(len(r.ids[seq]))*int64(time.Second)
		batch.Append(&ev)
		r.ids[seq], r.lastTime[seq] = append(r.ids[seq], ev.ID), ev.Time
		if len(r.ids[seq]) == replayPerMsg {
			data, err := batch.AppendIPC(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.Publish(ctx, schemas.EventsSubject(replayPart), data); err != nil {
				t.Fatal(err)
			}
			seq, line = seq+1, 0
		}
	}
	r.rows = &rowLog{written: map[uint64]int{}, stored: map[uint64]bool{}}
	for _, id := range r.idsOf(1, replayStored) {
		r.rows.stored[id] = true
	}
	r.src = &takeoverSource{delivered: replayMsgs, queued: make(chan jetstream.Msg, replayMsgs)}
	r.p, err = New(Config{Workers: 2, CheckpointStore: st, Partitions: replayParts, PartitionOwnership: true, Stream: stream,
		FlushInterval: 20 * time.Millisecond}, r.src, r.rows, nopPublisher{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.gate = &lockedGate{limit: r.lastTime[7]}
	r.p.GateClasses(r.gate)
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- r.p.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	if err := r.p.RestorePartition(ctx, replayPart, 0); err != nil { // the source says what was delivered
		t.Fatal(err)
	}
	return r
}

// idsOf returns the event ids of messages from to to.
func (r *replayRig) idsOf(from, to int) []uint64 { return slices.Concat(r.ids[from : to+1]...) }

// settle returns once every result dispatched before it is written.
func (r *replayRig) settle() {
	r.t.Helper()
	if err := r.p.SavePartition(r.ctx, replayPart); err != nil {
		r.t.Fatal(err)
	}
}

// waitHeld waits until the pipeline holds for the gate (or judged every
// message at once), then settles.
func (r *replayRig) waitHeld() {
	r.t.Helper()
	r.settle()
	for r.gate.held() == 0 {
		if n, _ := r.rows.count(r.idsOf(replayStored+1, replayMsgs)); n == len(r.idsOf(replayStored+1, replayMsgs)) {
			break // judged at once
		}
		if r.ctx.Err() != nil {
			r.t.Fatal("the pipeline neither held nor judged the partition's messages")
		}
		time.Sleep(10 * time.Millisecond) // polling the condition
	}
	r.settle()
}

// checkHeld checks what was judged while the gate held at message 7.
func (r *replayRig) checkHeld() {
	r.t.Helper()
	if n, _ := r.rows.count(r.idsOf(1, replayStored)); n != 0 {
		r.t.Errorf("%d events of the messages the previous owner stored were written again", n)
	}
	if n, _ := r.rows.count(r.idsOf(replayStored+1, 8)); n != len(r.idsOf(replayStored+1, 8)) {
		r.t.Errorf("while held at message 7's events: %d of messages 5-8's %d events judged, want all", n, len(r.idsOf(replayStored+1, 8)))
	}
	if n, _ := r.rows.count(r.idsOf(9, replayMsgs)); n != 0 {
		r.t.Errorf("while held at message 7's events (%s): %d events of messages 9-12 judged, want none (judged outside the gate)",
			time.Unix(0, r.lastTime[7]).UTC().Format(time.TimeOnly), n)
	}
}

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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang bound
	defer cancel()
	r := newReplayRig(t, ctx)
	r.waitHeld()
	r.checkHeld()

	// The consumer redelivers messages 9 and 10 (the previous owner's,
	// unacked), then the limit moves.
	cons, err := r.js.CreateConsumer(ctx, schemas.StreamEvents, jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: 9, AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: schemas.EventsSubject(replayPart)})
	if err != nil {
		t.Fatal(err)
	}
	again, err := cons.FetchNoWait(2)
	if err != nil {
		t.Fatal(err)
	}
	for m := range again.Messages() {
		r.src.queued <- m
	}
	r.gate.set(math.MaxInt64 - 1)
	want := r.idsOf(replayStored+1, replayMsgs)
	for {
		if n, _ := r.rows.count(want); n == len(want) {
			break
		}
		if ctx.Err() != nil {
			n, _ := r.rows.count(want)
			t.Fatalf("after the limit moved: %d of messages 5-12's %d events judged", n, len(want))
		}
		time.Sleep(10 * time.Millisecond) // polling the condition
	}
	r.settle()
	if n, rows := r.rows.count(want); rows != n {
		t.Errorf("messages 5-12: %d rows for %d events, want one each (a redelivery judged again)", rows, n)
	}
	if got := r.p.M.Replayed.Load(); got != uint64(len(want)) {
		t.Errorf("replayed %d events, want %d", got, len(want))
	}
	if got := r.p.M.RedeliveredDone.Load(); got != 2 {
		t.Errorf("%d redeliveries acked unjudged, want 2 (messages 9 and 10)", got)
	}
}

// TestTakeoverReplayLost: a partition whose lease ends while its replay
// holds messages judges none of them once the gate's limit moves (another
// instance may own it already); lost, it saves its object no further than
// the messages it judged (8), although its consumer's ack floor is past
// them (the redeliveries acked unjudged: 12), and its loss drops the rest:
// its next owner catches up from message 9.
func TestTakeoverReplayLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang bound
	defer cancel()
	r := newReplayRig(t, ctx)
	r.waitHeld()
	r.checkHeld()
	r.src.leaseEnded.Store(true)
	r.gate.set(math.MaxInt64 - 1)
	r.settle() // as below: the ingest loop ran past the gate
	r.settle()
	if n, _ := r.rows.count(r.idsOf(9, replayMsgs)); n != 0 {
		t.Errorf("after the partition's lease ended: %d events of messages 9-12 judged, want none (another owner's)", n)
	}
	r.src.ackFloor.Store(replayMsgs)
	if err := r.p.releasePartition(ctx, replayPart); err != nil {
		t.Fatal(err)
	}
	info, err := r.p.cfg.CheckpointStore.GetInfo(ctx, schemas.CheckpointDevicesObject(replayPart))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Metadata[schemas.CheckpointMetaStreamSeq]; got != "8" {
		t.Errorf("the lost partition's object is at %s, want 8 (the last message judged)", got)
	}
	if err := r.p.DropPartition(ctx, replayPart); err != nil {
		t.Fatal(err)
	}
	// Were the lease to hold again, the lost replay is not judged (a new
	// acquisition restores the partition first).
	r.src.leaseEnded.Store(false)
	r.settle() // a save of the partition, as an operation: the ingest loop ran a round between the two
	r.settle()
	if n, _ := r.rows.count(r.idsOf(9, replayMsgs)); n != 0 {
		t.Errorf("after the partition was lost: %d events of messages 9-12 judged, want none (its next owner's)", n)
	}
	if got := r.p.M.Replayed.Load(); got != uint64(len(r.idsOf(replayStored+1, 8))) {
		t.Errorf("replayed %d events, want %d (messages 5-8)", got, len(r.idsOf(replayStored+1, 8)))
	}
}
