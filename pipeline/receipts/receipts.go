// Package receipts stores the enforcement points' apply receipts in ClickHouse,
// so that an analyst sees each decision go from decided (the decisions table)
// to enforced at each enforcement point, and lifted (the receipts table).
//
// Enforcement points publish schemas.ApplyReceipt JSON on
// schemas.SubjectDecisionsApplied, which the stream IOTWATCH_DECISIONS stores
// next to the decisions. Run reads them with a durable pull consumer filtered
// to that subject, inserts them in batches and acks a batch only after its
// insert succeeded: a crash or a failed insert leaves the receipts unacked and
// JetStream redelivers them. Rewriting a receipt is harmless (the table is a
// ReplacingMergeTree keyed by decision, enforcer and action).
package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// config tunes Run; tests shorten the waits.
type config struct {
	batch     int           // most receipts one fetch returns, and one insert writes
	fetchWait time.Duration // longest wait of one fetch: the delay before a lone receipt is stored
	ackWait   time.Duration // the consumer's AckWait: redelivery of receipts whose insert did not finish
	retryWait time.Duration // pause after a failed fetch
}

func defaultConfig() config {
	return config{batch: 1000, fetchWait: 500 * time.Millisecond, ackWait: 2 * time.Minute, retryWait: time.Second}
}

// warnEvery rate-limits the warnings about bad receipts and failed fetches.
const warnEvery = 10 * time.Second

// Run creates or updates the durable consumer schemas.ConsumerReceipts on
// IOTWATCH_DECISIONS (filter schemas.SubjectDecisionsApplied, explicit acks,
// from the first message) and stores every receipt in the receipts table of
// ch until ctx is done. The stream and the table must exist (bus.Ensure,
// ch.Migrate). A receipt that does not decode, or lacks its decision id,
// enforcer id or action, is logged (rate-limited) and terminated, never
// retried. A failed insert is retried by ch until ctx is done.
//
// Run returns nil when ctx is done and an error only when the consumer cannot
// be created. log may be nil.
func Run(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, log *slog.Logger) error {
	return run(ctx, js, ch, defaultConfig(), log)
}

func run(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, cfg config, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamDecisions, jetstream.ConsumerConfig{
		Durable:       schemas.ConsumerReceipts,
		Description:   "iotwatch: apply receipts into ClickHouse",
		FilterSubject: schemas.SubjectDecisionsApplied,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 4 * cfg.batch,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
	})
	if err != nil {
		return fmt.Errorf("cannot create or update consumer %q on stream %q: %w", schemas.ConsumerReceipts, schemas.StreamDecisions, err)
	}
	log.Info("storing apply receipts", "consumer", schemas.ConsumerReceipts, "table", schemas.TableReceipts)
	s := &storer{ch: ch, log: log}
	msgs := make([]jetstream.Msg, 0, cfg.batch)
	rows := make([]sink.Receipt, 0, cfg.batch)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(cfg.batch, jetstream.FetchMaxWait(cfg.fetchWait))
		if err != nil {
			s.warn("cannot fetch apply receipts, retrying", err)
			sleep(ctx, cfg.retryWait)
			continue
		}
		msgs, rows = msgs[:0], rows[:0]
		for m := range batch.Messages() {
			r, err := decode(m)
			if err != nil {
				s.warn("apply receipt rejected", err)
				if err := m.Term(); err != nil {
					s.warn("cannot terminate a rejected apply receipt", err)
				}
				continue
			}
			msgs, rows = append(msgs, m), append(rows, r)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
			!errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			s.warn("cannot fetch apply receipts, retrying", err)
		}
		if len(rows) == 0 {
			continue
		}
		if err := ch.WriteReceipts(ctx, rows); err != nil {
			// Only ctx's end or a permanent error gets here; the receipts stay
			// unacked and come back after AckWait.
			if ctx.Err() == nil {
				s.warn("cannot store apply receipts", err)
			}
			continue
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				s.warn("cannot ack an apply receipt", err) // redelivered, rewritten: harmless
			}
		}
	}
	return nil
}

// decode parses one receipt message.
func decode(m jetstream.Msg) (sink.Receipt, error) {
	var r sink.Receipt
	md, err := m.Metadata()
	if err != nil {
		return r, fmt.Errorf("cannot read metadata of a message on %q: %w", m.Subject(), err)
	}
	r.StreamSeq, r.Received = md.Sequence.Stream, md.Timestamp
	if err := json.Unmarshal(m.Data(), &r.ApplyReceipt); err != nil {
		return r, fmt.Errorf("cannot decode apply receipt %d: %w", md.Sequence.Stream, err)
	}
	if r.DecisionID == "" || r.EnforcerID == "" || r.Action == "" {
		return r, fmt.Errorf("cannot store apply receipt %d: decision id %q, enforcer id %q and action %q must be set",
			md.Sequence.Stream, r.DecisionID, r.EnforcerID, r.Action)
	}
	return r, nil
}

// storer rate-limits Run's warnings.
type storer struct {
	ch         *sink.ClickHouse
	log        *slog.Logger
	lastWarn   time.Time
	suppressed int
}

func (s *storer) warn(msg string, err error) {
	if now := time.Now(); now.Sub(s.lastWarn) >= warnEvery {
		s.log.Warn(msg, "err", err, "suppressed_warnings", s.suppressed)
		s.lastWarn, s.suppressed = now, 0
		return
	}
	s.suppressed++
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
