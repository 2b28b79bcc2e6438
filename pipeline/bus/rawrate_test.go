package bus

import (
	"strings"
	"testing"

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
