package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// stallEnv is a NATS server with the ingest consumer (ackWait: short, so
// that messages a stalled fetch held come back soon) and msgs log messages of a
// line each, the first also carrying an undecodable line (a dead letter).
func stallEnv(t testing.TB, msgs int, ackWait time.Duration) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	ctx := context.Background()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, js, err := bus.Connect(ctx, ns.URL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := bus.DefaultStreamsConfig()
	cfg.AckWait = ackWait
	cons, err := bus.EnsureIngest(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for m := range msgs {
		line := fmt.Sprintf(`{"ts":"2026-01-05T10:%02d:%02dZ","tenant":"acme","device":"d-%d","method":"GET","path":"/v1/state"}`+"\n", m/60, m%60, m)
		if m == 0 {
			line += `{"ts":"2026-01-05T10:00:00Z"}` + "\n" // no device: a dead letter
		}
		if _, err := js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw"), []byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	return js, cons
}

// background runs st until the returned stop is called.
func background(t testing.TB, st *ingest.Stage) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// waitFor polls cond (a condition on the stage's counters or the server's
// state) until it holds; the minute is a hang bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("hung: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not waiting for work by time
	}
}

// caughtUp reports whether cons has nothing pending or unacked.
func caughtUp(t testing.TB, cons jetstream.Consumer) bool {
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Log(err) // a loaded machine may time an info request out: ask again
		return false
	}
	return info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0
}

// openFetch is a consumer whose first fetch delivers the real fetch's
// messages but never ends (its channel stays open): a fault at the point
// where the stage waited on a fetch for good.
type openFetch struct {
	jetstream.Consumer
	fetches atomic.Int64
}

func (c *openFetch) Fetch(n int, opts ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	b, err := c.Consumer.Fetch(n, opts...)
	if err != nil || c.fetches.Add(1) != 1 {
		return b, err
	}
	ch := make(chan jetstream.Msg, n)
	go func() {
		for m := range b.Messages() {
			ch <- m
		}
	}()
	return neverEnds(ch), nil
}

type neverEnds chan jetstream.Msg

func (b neverEnds) Messages() <-chan jetstream.Msg { return b }
func (b neverEnds) Error() error                   { return nil }

// TestStageFetchThatNeverEnds: a fetch whose delivery does not end holds
// the stage FetchEnd, not forever; it goes on with what the fetch
// delivered, acks it, counts the stall, and every message is acked.
func TestStageFetchThatNeverEnds(t *testing.T) {
	const msgs = 10
	js, cons := stallEnv(t, msgs, 2*time.Second)
	log := slog.New(slog.DiscardHandler)
	oc := &openFetch{Consumer: cons}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 2, FetchEnd: 300 * time.Millisecond}, ingest.Options{}, oc, js, sink.NewNATSPublisher(js, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	stop := background(t, st)
	waitFor(t, "the stage never acked the messages of a fetch that did not end", func() bool { return caughtUp(t, cons) })
	stop()
	if st.M.FetchStalls.Load() != 1 || st.M.Acked.Load() < msgs || st.M.Events.Load() < msgs {
		t.Fatalf("%d fetch stalls, %d acked, %d events; want 1, >= %d, >= %d", st.M.FetchStalls.Load(), st.M.Acked.Load(), st.M.Events.Load(), msgs, msgs)
	}
}

// downDLQ is a dead-letter queue that fails while down is set.
type downDLQ struct {
	ingest.DeadLetterer
	down  atomic.Bool
	fails atomic.Int64
}

func (d *downDLQ) DeadLetters(ctx context.Context, subject string, seq uint64, letters []schemas.DeadLetter) error {
	if d.down.Load() {
		d.fails.Add(1)
		return errors.New("dead-letter queue down")
	}
	return d.DeadLetterer.DeadLetters(ctx, subject, seq, letters)
}

// TestStageHoldLimit: while the dead-letter queue is down, the message with
// a dead letter cannot be acked; the stage gives its fetch up after the
// hold limit (the message is redelivered after the ack wait) and acks the
// messages of the following fetches meanwhile, instead of retrying that
// one fetch for as long as it runs. Once the queue is back, every message
// is acked and its dead letter published.
func TestStageHoldLimit(t *testing.T) {
	const msgs = 5
	js, cons := stallEnv(t, msgs, 2*time.Second)
	log := slog.New(slog.DiscardHandler)
	dlq := &downDLQ{DeadLetterer: sink.NewNATSPublisher(js, nil, log)}
	dlq.down.Store(true)
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 2, FetchBatch: 1, HoldLimit: 300 * time.Millisecond}, ingest.Options{}, cons, js, dlq, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := background(t, st)
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	waitFor(t, "the stage acked nothing after the message it could not dead-letter", func() bool {
		return st.M.Acked.Load() == msgs-1 && st.M.Abandoned.Load() >= 1
	})
	dlq.down.Store(false)
	waitFor(t, "the stage never acked the message once the dead-letter queue was back", func() bool { return caughtUp(t, cons) })
	stop()
	stop = nil
	if st.M.Acked.Load() != msgs || st.M.DeadLettered.Load() != 1 || dlq.fails.Load() == 0 {
		t.Fatalf("%d acked, %d dead-lettered, %d dead-letter failures; want %d, 1, > 0", st.M.Acked.Load(), st.M.DeadLettered.Load(), dlq.fails.Load(), msgs)
	}
}

// lostAcks is a JetStream that loses the PubAck of the first publish of
// each of the first lose batches (by message id): sent, but its future never
// resolves (as with a killed stream leader, or a PubAck late past the
// timeout on a loaded machine).
type lostAcks struct {
	jetstream.JetStream
	mu   sync.Mutex
	lose int
	seen map[string]bool
}

func (j *lostAcks) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f, err := j.JetStream.PublishMsgAsync(m, opts...)
	if err != nil {
		return f, err
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	id := m.Header.Get(jetstream.MsgIDHeader)
	if j.seen == nil {
		j.seen = map[string]bool{}
	}
	if j.seen[id] || len(j.seen) >= j.lose {
		return f, nil
	}
	j.seen[id] = true
	return neverResolves{m}, nil
}

type neverResolves struct{ m *nats.Msg }

func (f neverResolves) Ok() <-chan *jetstream.PubAck { return nil }
func (f neverResolves) Err() <-chan error            { return nil }
func (f neverResolves) Msg() *nats.Msg               { return f.m }

// TestStageLostPubAcks: the first PubAcks of the first 6 batches never
// come;
// after PublishTimeout the stage publishes them again (same ids, the
// stream keeps one copy) until acknowledged, and acks every message.
func TestStageLostPubAcks(t *testing.T) {
	const msgs, lose = 10, 6
	js, cons := stallEnv(t, msgs, 2*time.Second)
	log := slog.New(slog.DiscardHandler)
	lj := &lostAcks{JetStream: js, lose: lose}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: 4, PublishTimeout: 300 * time.Millisecond}, ingest.Options{}, cons, lj, sink.NewNATSPublisher(js, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	stop := background(t, st)
	waitFor(t, "the stage never acked the messages whose PubAcks were lost", func() bool { return caughtUp(t, cons) })
	stop()
	events, err := js.Stream(context.Background(), schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := events.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// One batch per message (one event each); a message redelivered after
	// the 2 s ack wait on a loaded machine is acked again, its batch
	// dropped by the stream as a duplicate.
	if st.M.Acked.Load() < msgs || st.M.PublishRetries.Load() < lose || info.State.Msgs != msgs {
		t.Fatalf("%d acked, %d publishes retried, stream holds %d batches; want >= %d, >= %d, %d",
			st.M.Acked.Load(), st.M.PublishRetries.Load(), info.State.Msgs, msgs, lose, msgs)
	}
}
