package bus

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkAckFlush measures acking one flush of 256 fetched log messages
// (~300 bytes) on the embedded server: "async" acks every message without a
// reply (what the pipeline did before), "confirmed" acks all but the last
// without a reply and the last with DoubleAck (what pipeline.ackJob does, so
// that the acked counter holds only acks the server confirmed). Each
// iteration fetches and acks one flush; publishing is outside the timer.
func BenchmarkAckFlush(b *testing.B) {
	const flush = 256
	for _, confirmed := range []bool{false, true} {
		name := "async"
		if confirmed {
			name = "confirmed"
		}
		b.Run(name, func(b *testing.B) {
			ctx, js := serverJS(b)
			cons, _, err := Ensure(ctx, js, DefaultStreamsConfig())
			if err != nil {
				b.Fatal(err)
			}
			line := make([]byte, 300)
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for range flush {
					if _, err := js.PublishAsync(LogSubject(schemas.FormatJSON, "gw1"), line); err != nil {
						b.Fatal(err)
					}
				}
				<-js.PublishAsyncComplete()
				b.StartTimer()
				mb, err := cons.Fetch(flush, jetstream.FetchMaxWait(5*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				var msgs []jetstream.Msg
				for m := range mb.Messages() {
					msgs = append(msgs, m)
				}
				for i, m := range msgs {
					if confirmed && i == len(msgs)-1 {
						err = m.DoubleAck(ctx)
					} else {
						err = m.Ack()
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*flush), "ns/msg")
		})
	}
}
