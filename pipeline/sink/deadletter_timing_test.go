package sink

import (
	"context"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkDeadLetters dead-letters log messages of 100 one-byte bad lines
// (issue 13: 135x their size in the DLQ, one synchronous publish per line),
// the way the pipeline did before (per_line: one message per record with its
// own headers, one PubAck round trip each, kept here as deadLetterPerLine)
// and the way it does now (batched: DeadLetters). It reports the time and the
// DLQ stream's bytes per bad line.
func BenchmarkDeadLetters(b *testing.B) {
	const lines = 100
	detail := "expected '{' at the start of the line" // what the JSON decoder says of "x"
	const subject = "iotwatch.logs.json.gateway-eu-1"
	run := func(b *testing.B, publish func(ctx context.Context, env *natsEnv, seq uint64, letters []schemas.DeadLetter) error) {
		env := newNATSEnv(b, true)
		ctx := context.Background()
		s, err := env.js.Stream(ctx, schemas.StreamDLQ)
		if err != nil {
			b.Fatal(err)
		}
		letters := make([]schemas.DeadLetter, lines)
		seq := uint64(0)
		b.ReportAllocs()
		for b.Loop() {
			seq++
			for i := range letters {
				letters[i] = schemas.DeadLetter{Line: uint32(i), Reason: schemas.DeadLetterMalformedJSON, Detail: detail, Size: 1, Record: []byte{'x'}}
			}
			if err := publish(ctx, env, seq, letters); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		info, err := s.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n := float64(seq * lines)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/line")
		b.ReportMetric(float64(info.State.Bytes)/n, "DLQ-B/line")
		b.ReportMetric(float64(info.State.Msgs)/n, "DLQ-msgs/line")
	}
	b.Run("per_line", func(b *testing.B) {
		run(b, func(ctx context.Context, env *natsEnv, seq uint64, letters []schemas.DeadLetter) error {
			for _, d := range letters {
				if err := deadLetterPerLine(ctx, env.js, subject, seq, d.Line, d.Reason, d.Detail, d.Record); err != nil {
					return err
				}
			}
			return nil
		})
	})
	b.Run("batched", func(b *testing.B) {
		run(b, func(ctx context.Context, env *natsEnv, seq uint64, letters []schemas.DeadLetter) error {
			return env.pub.DeadLetters(ctx, subject, seq, letters)
		})
	})
}

// deadLetterPerLine is how a record was dead-lettered before DeadLetters
// (commit e0de0eb): alone, with its headers, waiting for its PubAck.
func deadLetterPerLine(ctx context.Context, js jetstream.JetStream, origSubject string, seq uint64, line uint32, reason, detail string, payload []byte) error {
	m := nats.NewMsg(schemas.SubjectDLQPrefix + "." + bus.SubjectToken(reason))
	m.Data = payload
	m.Header.Set(schemas.HeaderDLQReason, headerValue(reason))
	m.Header.Set(schemas.HeaderDLQSubject, headerValue(origSubject))
	m.Header.Set(schemas.HeaderDLQSequence, strconv.FormatUint(seq, 10))
	m.Header.Set(schemas.HeaderDLQLine, strconv.FormatUint(uint64(line), 10))
	m.Header.Set(schemas.HeaderDLQDetailV1, headerValue(detail))
	id := strconv.FormatUint(seq, 10) + "-" + strconv.FormatUint(uint64(line), 10)
	_, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectStream(schemas.StreamDLQ))
	return err
}
