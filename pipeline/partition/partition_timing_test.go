package partition_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkConsume reads the same 8 partitions' messages (20,000 of 300
// bytes, published before the timer starts) with one consumer of every
// partition and with a partition.Consumer owning all 8 (merged in stream
// order), fetching 256 at a time and acking as a pipeline flush does every
// flushEvery messages (one DoubleAck per consumer, the others acked without
// a reply): the cost of ownership on the consume path. It reports messages/s
// and messages per fetch.
func BenchmarkConsume(b *testing.B) {
	const msgs = 20000
	payload := make([]byte, 300)
	for _, mode := range []string{"one-consumer", "owned-partitions"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				env := natstest.Start(b, natsserver.Options{})
				ctx := context.Background()
				scfg := bus.DefaultStreamsConfig()
				single, _, err := bus.EnsureScorer(ctx, env.JS, scfg, nil)
				if err != nil {
					b.Fatal(err)
				}
				parts, _, _, err := bus.EnsurePartitions(ctx, env.JS, scfg, 8, 0)
				if err != nil {
					b.Fatal(err)
				}
				for i := range msgs {
					if _, err := env.JS.PublishAsync(schemas.EventsSubject(i%8), payload); err != nil {
						b.Fatal(err)
					}
					if i%1000 == 999 {
						<-env.JS.PublishAsyncComplete()
					}
				}
				<-env.JS.PublishAsyncComplete()
				var src interface {
					Fetch(int, ...jetstream.FetchOpt) (jetstream.MessageBatch, error)
				} = single
				var pc *partition.Consumer
				if mode == "owned-partitions" {
					stream, err := env.JS.Stream(ctx, schemas.StreamEvents)
					if err != nil {
						b.Fatal(err)
					}
					pc, err = partition.New(ctx, stream, parts, partition.Config{Log: slog.New(slog.DiscardHandler)})
					if err != nil {
						b.Fatal(err)
					}
					src = pc
				}
				b.StartTimer()
				got, fetches := 0, 0
				last := map[string]jetstream.Msg{}
				for got < msgs {
					batch, err := src.Fetch(256, jetstream.FetchMaxWait(defaultWait))
					if err != nil {
						b.Fatal(err)
					}
					fetches++
					for m := range batch.Messages() {
						md, err := m.Metadata()
						if err != nil {
							b.Fatal(err)
						}
						if prev := last[md.Consumer]; prev != nil {
							_ = prev.Ack()
						}
						last[md.Consumer] = m
						if got++; got%flushEvery == 0 || got == msgs {
							for c, m := range last {
								if err := m.DoubleAck(ctx); err != nil {
									b.Fatal(err)
								}
								delete(last, c)
							}
						}
					}
				}
				b.ReportMetric(float64(msgs)/float64(fetches), "msgs/fetch")
				b.StopTimer()
				if pc != nil {
					pc.Stop(ctx)
				}
				env.Server.Shutdown()
				b.StartTimer()
			}
			b.ReportMetric(float64(msgs)*float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// flushEvery is how many messages a flush of the pipeline acks here.
const flushEvery = 2048

// defaultWait is the pipeline's default FetchWait.
const defaultWait = 100 * time.Millisecond
