package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

const (
	// scratchPrefix names the streams and subjects RawConsumeRate creates;
	// none of the iotwatch streams listen on it.
	scratchStreamPrefix  = "IOTWATCH_SCRATCH_"
	scratchSubjectPrefix = "iotwatch.scratch."
	// rawFetchWait bounds one Fetch while messages are expected.
	rawFetchWait = 5 * time.Second
)

// RawConsumeRate measures the ceiling of the pipeline's consume loop on this
// JetStream: it creates a scratch file-storage stream, publishes n messages of
// size bytes to it (async, waiting for every PubAck), then consumes them with a
// durable pull consumer using Fetch(batch) and one explicit Ack per message,
// and returns the consume phase's rate in messages per second. The scratch
// stream is deleted on return, also on error. The server acks asynchronously,
// so the rate counts Ack calls, not acknowledgements the server has processed.
func RawConsumeRate(ctx context.Context, js jetstream.JetStream, n, size, batch int) (float64, error) {
	return RawConsumeRateWith(ctx, js, n, size, batch, RawOptions{})
}

// RawOptions shape the messages RawConsumeRateWith publishes.
type RawOptions struct {
	// MsgIDs gives every message a Nats-Msg-Id header (a distinct id), as
	// 'iotwatch ship' and bench/e2e publish the pipeline's input: the client
	// then decodes a header with every message delivered.
	MsgIDs bool
}

// RawConsumeRateWith is RawConsumeRate of messages shaped by o.
func RawConsumeRateWith(ctx context.Context, js jetstream.JetStream, n, size, batch int, o RawOptions) (float64, error) {
	if n <= 0 || size < 0 || batch <= 0 {
		return 0, fmt.Errorf("cannot measure raw consume rate: n=%d, size=%d and batch=%d must be positive", n, size, batch)
	}
	id := nuid.Next()
	name := scratchStreamPrefix + id
	subject := scratchSubjectPrefix + id
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     name,
		Subjects: []string{subject},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		return 0, fmt.Errorf("cannot create scratch stream %q: %w", name, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = js.DeleteStream(dctx, name)
	}()

	if err := publishScratch(ctx, js, subject, n, size, o.MsgIDs); err != nil {
		return 0, err
	}

	cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{
		Durable:       "raw",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxAckPending: max(2*batch, 1000),
	})
	if err != nil {
		return 0, fmt.Errorf("cannot create consumer on scratch stream %q: %w", name, err)
	}
	got := 0
	start := time.Now()
	for got < n {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("cannot consume scratch stream %q: %w", name, err)
		}
		mb, err := cons.Fetch(min(batch, n-got), jetstream.FetchMaxWait(rawFetchWait))
		if err != nil {
			return 0, fmt.Errorf("cannot fetch from scratch stream %q: %w", name, err)
		}
		fetched := 0
		for m := range mb.Messages() {
			if err := m.Ack(); err != nil {
				return 0, fmt.Errorf("cannot ack message of scratch stream %q: %w", name, err)
			}
			fetched++
		}
		if err := mb.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return 0, fmt.Errorf("cannot fetch from scratch stream %q: %w", name, err)
		}
		if fetched == 0 {
			return 0, fmt.Errorf("cannot consume scratch stream %q: no message within %s after %d of %d", name, rawFetchWait, got, n)
		}
		got += fetched
	}
	elapsed := time.Since(start)
	return float64(got) / elapsed.Seconds(), nil
}

// publishScratch publishes n messages of size bytes to subject, each with a
// Nats-Msg-Id when msgIDs is set, and waits for every PubAck.
func publishScratch(ctx context.Context, js jetstream.JetStream, subject string, n, size int, msgIDs bool) error {
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	opts := []jetstream.PublishOpt{jetstream.WithStallWait(rawFetchWait)}
	for i := range n {
		if msgIDs {
			opts = append(opts[:1], jetstream.WithMsgID(fmt.Sprint("raw-", i)))
		}
		f, err := js.PublishAsync(subject, payload, opts...)
		if err != nil {
			return fmt.Errorf("cannot publish to scratch subject %q: %w", subject, err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("cannot publish to scratch subject %q: %w", subject, err)
		case <-ctx.Done():
			return fmt.Errorf("cannot publish to scratch subject %q: %w", subject, ctx.Err())
		}
	}
	return nil
}
