package ingest_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// runStage runs a stage on cons until cons has nothing pending or unacked.
func runStage(t *testing.T, js jetstream.JetStream, cons jetstream.Consumer, partitions int) *ingest.Stage {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: partitions}, ingest.Options{}, cons, js, sink.NewNATSPublisher(js, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for {
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the stage did not catch up: pending=%d ack_pending=%d", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition, not waiting for work by time
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return st
}

// TestStageRepublishesIdempotently runs the stage over the log stream, then
// again from its start (as after a crash that lost every ack): the second
// run publishes the same batches under the same message ids, and the
// events stream keeps one copy of each. Every event is in the batch of its
// device's partition, with the log stream's ids.
func TestStageRepublishesIdempotently(t *testing.T) {
	ctx := context.Background()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, js, err := bus.Connect(ctx, ns.URL(), "test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := bus.DefaultStreamsConfig()
	cons, err := bus.EnsureIngest(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const msgs, lines, partitions = 20, 50, 4
	for m := range msgs {
		var b strings.Builder
		for l := range lines {
			fmt.Fprintf(&b, `{"ts":"2026-01-05T10:%02d:%02dZ","tenant":"acme","device":"d-%d","method":"GET","path":"/v1/state"}`+"\n", m, l, (m*lines+l)%37)
		}
		b.WriteString(`{"ts":"2026-01-05T10:00:00Z"}` + "\n") // no device: a dead letter
		if _, err := js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw"), []byte(b.String())); err != nil {
			t.Fatal(err)
		}
	}
	first := runStage(t, js, cons, partitions)
	if first.M.Events.Load() != msgs*lines || first.M.DeadLettered.Load() != msgs || first.M.Acked.Load() != msgs {
		t.Fatalf("first run: %d events, %d dead letters, %d acked; want %d, %d, %d", first.M.Events.Load(),
			first.M.DeadLettered.Load(), first.M.Acked.Load(), msgs*lines, msgs, msgs)
	}
	events, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	stored := events.CachedInfo().State.Msgs
	if stored != first.M.Batches.Load() || stored == 0 {
		t.Fatalf("IOTWATCH_EVENTS holds %d messages, the stage published %d batches", stored, first.M.Batches.Load())
	}

	// A crash that lost every ack: the log messages are consumed again.
	again, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamLogs, jetstream.ConsumerConfig{Durable: "again", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	second := runStage(t, js, again, partitions)
	if second.M.Batches.Load() != first.M.Batches.Load() {
		t.Fatalf("second run published %d batches, the first %d", second.M.Batches.Load(), first.M.Batches.Load())
	}
	info, err := events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != stored {
		t.Fatalf("after republishing, IOTWATCH_EVENTS holds %d messages, want %d (duplicates not dropped)", info.State.Msgs, stored)
	}

	// Every event is in its device's partition, with the log stream's ids.
	oc, err := events.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	r := schemas.NewEventReader(nil)
	var ev schemas.Event
	seen := map[uint64]bool{}
	for range stored {
		msg, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Open(msg.Data()); err != nil {
			t.Fatal(err)
		}
		for r.Next(&ev) == nil {
			if want := schemas.EventsSubject(schemas.PartitionOf(ev.DeviceAlt, partitions)); msg.Subject() != want {
				t.Fatalf("device %q on %s, want %s", ev.Device, msg.Subject(), want)
			}
			if ev.ID != schemas.EventID(ev.Seq, ev.Line) || seen[ev.ID] || ev.Seq < 1 || ev.Seq > msgs {
				t.Fatalf("event id %d (seq %d, line %d) is not the log stream's or is duplicated", ev.ID, ev.Seq, ev.Line)
			}
			seen[ev.ID] = true
		}
	}
	if len(seen) != msgs*lines {
		t.Fatalf("IOTWATCH_EVENTS holds %d distinct events, want %d", len(seen), msgs*lines)
	}
}
