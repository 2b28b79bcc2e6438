// Package receipts stores the enforcement points' apply receipts in ClickHouse,
// so that an analyst sees each decision go from decided (the decisions table)
// to enforced at each enforcement point, and lifted (the receipts table); and
// it stores the unblocks published on NATS (RunUnblocks) in the decisions
// table, with who lifted the block and why.
//
// Enforcement points publish schemas.ApplyReceipt JSON on
// schemas.SubjectDecisionsApplied, which the stream IOTWATCH_DECISIONS stores
// next to the decisions. Run reads them with a durable pull consumer filtered
// to that subject, inserts them in batches and acks a batch only after its
// insert succeeded: a crash or a failed insert leaves the receipts unacked and
// JetStream redelivers them. Rewriting a receipt is harmless (the table is a
// ReplacingMergeTree keyed by decision, enforcer and action).
//
// Receipts are verified before they are stored (Verifier): given the
// enforcement points' public keys, a receipt signed by the key of the
// enforcement point it names is stored as verified; one that is unsigned,
// badly signed, signed by an unknown key or by another enforcement point's key
// goes to the rejected receipts table with the reason, is counted
// (schemas.MetricReceiptsVerified) and logged at a bounded rate, and is never
// stored as a receipt. Without keys every receipt is stored as unverified.
package receipts

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
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
	return config{batch: bus.StoreBatch, fetchWait: 500 * time.Millisecond, ackWait: bus.StoreAckWait, retryWait: time.Second}
}

// warnEvery rate-limits the warnings about bad receipts and failed fetches.
const warnEvery = 10 * time.Second

// Verifier checks receipts against the enforcement points' public keys and
// counts the outcomes. Safe for concurrent use.
type Verifier struct {
	ring   map[string][]ed25519.PublicKey
	counts []atomic.Uint64 // by index in schemas.ReceiptVerifications()
}

// NewVerifier returns a Verifier trusting ring (enforcement point id, which
// is its key id → its public keys; schemas.LoadPublicKeyRing). With an empty
// ring nothing is checked: every receipt is schemas.ReceiptUnverified.
// NewVerifier keeps ring: the caller must not modify it afterwards.
func NewVerifier(ring map[string][]ed25519.PublicKey) *Verifier {
	return &Verifier{ring: ring, counts: make([]atomic.Uint64, len(schemas.ReceiptVerifications()))}
}

// Check returns r's verification status (a schemas.Receipt* verification
// status) and counts it; err says why it was rejected (nil when verified or
// unverified).
func (v *Verifier) Check(r *schemas.ApplyReceipt) (status string, err error) {
	if len(v.ring) == 0 {
		status = schemas.ReceiptUnverified
	} else {
		err = schemas.VerifyReceipt(r, v.ring)
		status = schemas.ReceiptVerification(err)
	}
	for i, s := range schemas.ReceiptVerifications() {
		if s == status {
			v.counts[i].Add(1)
		}
	}
	return status, err
}

// Count returns how many receipts Check gave status.
func (v *Verifier) Count(status string) uint64 {
	for i, s := range schemas.ReceiptVerifications() {
		if s == status {
			return v.counts[i].Load()
		}
	}
	return 0
}

// WriteMetrics writes the counts of Check in the Prometheus text format:
// schemas.MetricReceiptsVerified with label verification. Receipts read
// again after a redelivery are counted again.
func (v *Verifier) WriteMetrics(w io.Writer) {
	name := schemas.MetricReceiptsVerified
	fmt.Fprintf(w, "# HELP %s Apply receipts read, by verification status (verified, unverified, or why rejected).\n# TYPE %s counter\n", name, name)
	for i, s := range schemas.ReceiptVerifications() {
		fmt.Fprintf(w, "%s{verification=%q} %d\n", name, s, v.counts[i].Load())
	}
}

// Run creates or updates the durable consumer schemas.ConsumerReceipts on
// IOTWATCH_DECISIONS (filter schemas.SubjectDecisionsApplied, explicit acks,
// from the first message) and stores every receipt in the receipts table of
// ch until ctx is done. The stream and the table must exist (bus.Ensure,
// ch.Migrate). A receipt that does not decode, or lacks its decision id,
// enforcer id or action, is logged (rate-limited) and terminated, never
// retried. A failed insert is retried by ch until ctx is done.
//
// Run checks nothing: every receipt is stored as schemas.ReceiptUnverified
// (RunVerified checks them).
//
// Run returns nil when ctx is done and an error only when the consumer cannot
// be created. log may be nil.
func Run(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, log *slog.Logger) error {
	return RunVerified(ctx, js, ch, NewVerifier(nil), log)
}

// RunVerified is Run with each receipt checked by v first: verified (and,
// with no keys in v, unverified) receipts go to the receipts table with
// their status; rejected ones go to the rejected receipts table
// (schemas.TableRejectedReceipts) with the reason, and a warning names them
// at most every 10 s. A batch is acked once both inserts succeeded.
func RunVerified(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, v *Verifier, log *slog.Logger) error {
	return run(ctx, js, ch, defaultConfig(), v, log)
}

func run(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, cfg config, v *Verifier, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rejectLog := &storer{log: log.With("consumer", schemas.ConsumerReceipts)}
	var good, bad []sink.Receipt
	return store(ctx, js, cfg, log, storeSpec[sink.Receipt]{
		consumer: schemas.ConsumerReceipts, subject: schemas.SubjectDecisionsApplied,
		table: schemas.TableReceipts, what: "apply receipts",
		decode: func(m jetstream.Msg) (sink.Receipt, error) {
			r, err := decode(m)
			if err != nil {
				return r, err
			}
			var verr error
			r.Verification, verr = v.Check(&r.ApplyReceipt)
			if verr != nil {
				rejectLog.warn("apply receipt rejected, stored in "+schemas.TableRejectedReceipts, verr)
			}
			return r, nil
		},
		write: func(ctx context.Context, rs []sink.Receipt) error {
			good, bad = good[:0], bad[:0]
			for _, r := range rs {
				switch r.Verification {
				case schemas.ReceiptVerified, schemas.ReceiptUnverified:
					good = append(good, r)
				default:
					bad = append(bad, r)
				}
			}
			if err := ch.WriteRejectedReceipts(ctx, bad); err != nil {
				return err
			}
			return ch.WriteReceipts(ctx, good)
		},
	})
}

// RunUnblocks is Run for unblock decisions: it creates or updates the durable
// consumer schemas.ConsumerUnblocks on IOTWATCH_DECISIONS (filter
// iotwatch.decisions.unblock) and stores every unblock in the decisions table
// of ch (issuer, reason, the block it lifts by id) until ctx is done. An
// unblock that does not decode, or lacks its id, scope or value, is logged
// (rate-limited) and terminated. Signatures are not checked here: the row
// records what was published (enforcement points verify before they act).
func RunUnblocks(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, log *slog.Logger) error {
	return runUnblocks(ctx, js, ch, defaultConfig(), log)
}

func runUnblocks(ctx context.Context, js jetstream.JetStream, ch *sink.ClickHouse, cfg config, log *slog.Logger) error {
	return store(ctx, js, cfg, log, storeSpec[schemas.Decision]{
		consumer: schemas.ConsumerUnblocks, subject: schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock,
		table: schemas.TableDecisions, what: "unblocks",
		decode: decodeUnblock, write: ch.WriteDecisions,
	})
}

// storeSpec says what store reads from IOTWATCH_DECISIONS and where it goes.
type storeSpec[T any] struct {
	consumer, subject, table, what string
	decode                         func(jetstream.Msg) (T, error)
	write                          func(context.Context, []T) error
}

// store runs the durable consumer of spec and writes what it decodes in
// batches, acking a batch only after its insert succeeded.
func store[T any](ctx context.Context, js jetstream.JetStream, cfg config, log *slog.Logger, spec storeSpec[T]) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, schemas.StreamDecisions, bus.StoreConsumer(spec.consumer, spec.subject, spec.what, cfg.ackWait, cfg.batch))
	if err != nil {
		return fmt.Errorf("cannot create or update consumer %q on stream %q: %w", spec.consumer, schemas.StreamDecisions, err)
	}
	log.Info("storing "+spec.what, "consumer", spec.consumer, "table", spec.table)
	s := &storer{log: log.With("consumer", spec.consumer)}
	msgs := make([]jetstream.Msg, 0, cfg.batch)
	rows := make([]T, 0, cfg.batch)
	for ctx.Err() == nil {
		batch, err := cons.Fetch(cfg.batch, jetstream.FetchMaxWait(cfg.fetchWait))
		if err != nil {
			s.warn("cannot fetch, retrying", err)
			sleep(ctx, cfg.retryWait)
			continue
		}
		msgs, rows = msgs[:0], rows[:0]
		for m := range batch.Messages() {
			r, err := spec.decode(m)
			if err != nil {
				s.warn("message rejected", err)
				if err := m.Term(); err != nil {
					s.warn("cannot terminate a rejected message", err)
				}
				continue
			}
			msgs, rows = append(msgs, m), append(rows, r)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) &&
			!errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			s.warn("cannot fetch, retrying", err)
		}
		if len(rows) == 0 {
			continue
		}
		if err := spec.write(ctx, rows); err != nil {
			// Only ctx's end or a permanent error gets here; the messages stay
			// unacked and come back after AckWait.
			if ctx.Err() == nil {
				s.warn("cannot store a batch", err)
			}
			continue
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				s.warn("cannot ack", err) // redelivered, rewritten: harmless
			}
		}
	}
	return nil
}

// decodeUnblock parses one unblock decision message.
func decodeUnblock(m jetstream.Msg) (schemas.Decision, error) {
	var d schemas.Decision
	if err := json.Unmarshal(m.Data(), &d); err != nil {
		return d, fmt.Errorf("cannot decode unblock on %q: %w", m.Subject(), err)
	}
	if d.ID == "" || d.Scope == "" || d.Value == "" || d.Action != schemas.ActionUnblock {
		return d, fmt.Errorf("cannot store unblock %q: action %q, scope %q and value %q must be set", d.ID, d.Action, d.Scope, d.Value)
	}
	return d, nil
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
