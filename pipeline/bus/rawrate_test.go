package bus

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
)

func TestRawConsumeRate(t *testing.T) {
	ctx, js := serverJS(t)
	// Enough messages for several fetches of a batch: the test is about the
	// measurement's mechanics; BenchmarkRawConsume measures.
	rate, err := RawConsumeRate(ctx, js, 5000, 300, 1000)
	if err != nil {
		t.Fatalf("cannot measure: %v", err)
	}
	if rate <= 0 {
		t.Fatalf("rate %f; want > 0", rate)
	}
	t.Logf("raw consume rate: %.0f msgs/s", rate)
	for name := range js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, scratchStreamPrefix) {
			t.Fatalf("scratch stream %q left behind", name)
		}
	}
	if _, err := RawConsumeRate(ctx, js, 0, 300, 1000); err == nil {
		t.Fatal("RawConsumeRate accepted n=0")
	}
}

// TestRawConsumeRateMsgIDs: with RawOptions.MsgIDs every scratch message
// carries a Nats-Msg-Id of its own (none is dropped as a duplicate), and
// the measurement consumes them all.
func TestRawConsumeRateMsgIDs(t *testing.T) {
	ctx, js := serverJS(t)
	const n = 300
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH_IDS", Subjects: []string{"scratch.ids"}}); err != nil {
		t.Fatal(err)
	}
	if err := publishScratch(ctx, js, "scratch.ids", n, 300, true); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateConsumer(ctx, "SCRATCH_IDS", jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := cons.Fetch(n, jetstream.FetchMaxWait(rawFetchWait))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for m := range mb.Messages() {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if id == "" || ids[id] {
			t.Fatalf("message %d: Nats-Msg-Id %q (empty or repeated)", len(ids), id)
		}
		ids[id] = true
	}
	if len(ids) != n {
		t.Fatalf("%d messages with ids, want %d", len(ids), n)
	}
	if rate, err := RawConsumeRateWith(ctx, js, 2000, 300, 500, RawOptions{MsgIDs: true}); err != nil || rate <= 0 {
		t.Fatalf("rate %f, err %v", rate, err)
	}
}

// BenchmarkRawConsume reports the ceiling of a Fetch(1000) + per-message Ack
// consume loop on an embedded server, for 300-byte messages.
func BenchmarkRawConsume(b *testing.B) {
	e := startTestServer(b, natsserver.Options{})
	_, js := connectTest(b, e.URL())
	ctx := b.Context()
	b.ReportAllocs()
	var sum float64
	runs := 0
	for b.Loop() {
		rate, err := RawConsumeRate(ctx, js, 50000, 300, 1000)
		if err != nil {
			b.Fatalf("cannot measure: %v", err)
		}
		sum += rate
		runs++
	}
	b.ReportMetric(sum/float64(runs), "msgs/s")
}
