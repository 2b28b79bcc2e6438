package ingest_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
)

// BenchmarkStageLostPubAcks measures how long the stage takes to settle a
// fetch of 256 log messages (4 partitions) whose first publishes all lost
// their PubAcks (PublishTimeout 1 s): the cost of the republishing after
// the timeout.
func BenchmarkStageLostPubAcks(b *testing.B) {
	const msgs = 256
	for b.Loop() {
		b.StopTimer()
		js, cons := stallEnv(b, msgs, time.Minute) // no redelivery while settling
		log := slog.New(slog.DiscardHandler)
		lj := &lostAcks{JetStream: js, lose: msgs}
		st, err := ingest.NewStage(ingest.StageConfig{Partitions: 4, PublishTimeout: time.Second}, ingest.Options{}, cons, lj, sink.NewNATSPublisher(js, nil, log), log)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		stop := background(b, st)
		for !caughtUp(b, cons) {
			time.Sleep(5 * time.Millisecond) // polling a server-side condition
		}
		b.StopTimer()
		stop()
		b.ReportMetric(float64(st.M.PublishRetries.Load()), "retries/op")
		b.StartTimer()
	}
}
