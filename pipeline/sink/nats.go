package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// dlqHeaderRoom is what a dead letter's headers may take of the max payload.
const dlqHeaderRoom = 4096

// maxDetailLen bounds the schemas.HeaderDLQDetail value.
const maxDetailLen = 1024

// NATSPublisher publishes the pipeline's results for enforcement points: alerts
// and decisions on their JetStream streams, active decisions in the KV bucket of
// active blocks, and undecodable records on the dead-letter stream. The streams
// and the bucket must exist (bus.Ensure). It is safe for concurrent use.
//
// Every published message carries a Nats-Msg-Id, so a caller that gets an error
// retries the same call with the same values and the streams' duplicate window
// drops the copies of messages that had already been stored.
type NATSPublisher struct {
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	log *slog.Logger
}

// NewNATSPublisher returns a publisher on js that keeps active decisions in kv,
// the bucket schemas.KVActiveBlocks returned by bus.Ensure. log may be nil.
func NewNATSPublisher(js jetstream.JetStream, kv jetstream.KeyValue, log *slog.Logger) *NATSPublisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NATSPublisher{js: js, kv: kv, log: log}
}

// PublishAlerts publishes each alert as JSON on iotwatch.alerts.<severity>
// (stream IOTWATCH_ALERTS) with Nats-Msg-Id set to the alert's ID, asynchronously,
// and returns once every alert is stored (its PubAck received). On error some
// alerts may be stored and others not: the caller retries the whole slice and
// the duplicate window drops the copies. An alert with an empty ID or severity
// is rejected before anything is published.
func (p *NATSPublisher) PublishAlerts(ctx context.Context, alerts []schemas.Alert) error {
	for i := range alerts {
		a := &alerts[i]
		if a.ID == "" || a.Severity == "" {
			return fmt.Errorf("cannot publish alert %q for device %q: id and severity must be set (severity %q)", a.ID, a.Device, a.Severity)
		}
	}
	futures := make([]pending, 0, len(alerts))
	for i := range alerts {
		a := &alerts[i]
		data, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("cannot encode alert %q: %w", a.ID, err)
		}
		subject := schemas.SubjectAlertsPrefix + "." + bus.SubjectToken(a.Severity)
		f, err := p.js.PublishMsgAsync(newMsg(subject, data), jetstream.WithMsgID(a.ID), jetstream.WithExpectStream(schemas.StreamAlerts))
		if err != nil {
			return fmt.Errorf("cannot publish alert %q to %q: %w", a.ID, subject, err)
		}
		futures = append(futures, pending{f, "alert", a.ID, subject})
	}
	return p.waitAcks(ctx, futures)
}

// PublishDecisions publishes each decision as JSON on
// iotwatch.decisions.<action> (stream IOTWATCH_DECISIONS) with Nats-Msg-Id set
// to its ID, waits for every PubAck, then applies the decisions in order to the
// KV bucket of active blocks: a block or throttle that is not a dry run is put
// under schemas.KVKey(scope, value) with the decision as value; an unblock
// deletes that key; a dry run (action would_block, or DryRun set) never touches
// the bucket. It returns once every KV write is acknowledged. On error the
// caller retries the whole slice: stream copies are dropped by the duplicate
// window and KV writes are idempotent. A decision with an empty ID or value, an
// unknown action or an unknown scope is rejected before anything is published.
func (p *NATSPublisher) PublishDecisions(ctx context.Context, ds []schemas.Decision) error {
	for i := range ds {
		if err := checkDecision(&ds[i]); err != nil {
			return err
		}
	}
	futures := make([]pending, 0, len(ds))
	values := make([][]byte, len(ds))
	for i := range ds {
		d := &ds[i]
		data, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("cannot encode decision %q: %w", d.ID, err)
		}
		values[i] = data
		subject := schemas.SubjectDecisionsPrefix + "." + d.Action
		f, err := p.js.PublishMsgAsync(newMsg(subject, data), jetstream.WithMsgID(d.ID), jetstream.WithExpectStream(schemas.StreamDecisions))
		if err != nil {
			return fmt.Errorf("cannot publish decision %q to %q: %w", d.ID, subject, err)
		}
		futures = append(futures, pending{f, "decision", d.ID, subject})
	}
	if err := p.waitAcks(ctx, futures); err != nil {
		return err
	}
	for i := range ds {
		d := &ds[i]
		key := schemas.KVKey(d.Scope, d.Value)
		switch {
		case d.DryRun || d.Action == schemas.ActionDryRunBlock:
		case d.Action == schemas.ActionBlock || d.Action == schemas.ActionThrottle:
			if _, err := p.kv.Put(ctx, key, values[i]); err != nil {
				return fmt.Errorf("cannot put decision %q in KV bucket %q under %q: %w", d.ID, p.kv.Bucket(), key, err)
			}
		case d.Action == schemas.ActionUnblock:
			if err := p.kv.Delete(ctx, key); err != nil {
				return fmt.Errorf("cannot delete %q from KV bucket %q for decision %q: %w", key, p.kv.Bucket(), d.ID, err)
			}
		}
	}
	return nil
}

func checkDecision(d *schemas.Decision) error {
	switch d.Action {
	case schemas.ActionBlock, schemas.ActionThrottle, schemas.ActionUnblock, schemas.ActionDryRunBlock:
	default:
		return fmt.Errorf("cannot publish decision %q: unknown action %q", d.ID, d.Action)
	}
	switch d.Scope {
	case schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeIP, schemas.ScopeTenant:
	default:
		return fmt.Errorf("cannot publish decision %q: unknown scope %q", d.ID, d.Scope)
	}
	if d.ID == "" || d.Value == "" {
		return fmt.Errorf("cannot publish decision %q (%s %s=%q): id and value must be set", d.ID, d.Action, d.Scope, d.Value)
	}
	return nil
}

// DeadLetter publishes payload, one undecodable record, on
// iotwatch.dlq.<reason> (stream IOTWATCH_DLQ) with the headers
// schemas.HeaderDLQReason (the reason code), HeaderDLQSubject (origSubject),
// HeaderDLQSequence (seq, the record's message in IOTWATCH_LOGS),
// HeaderDLQLine (line, the record's line in that message) and schemas.HeaderDLQDetail
// (detail on one line, cut to 1 KiB), and waits for the PubAck. Its Nats-Msg-Id
// is "<seq>-<line>", so dead-lettering a redelivered message stores nothing new.
func (p *NATSPublisher) DeadLetter(ctx context.Context, origSubject string, seq uint64, line uint32, reason, detail string, payload []byte) error {
	subject := schemas.SubjectDLQPrefix + "." + bus.SubjectToken(reason)
	m := nats.NewMsg(subject)
	// A copy that would not fit the server's max payload with its headers is
	// truncated (and says so): the original stays in IOTWATCH_LOGS at seq.
	if max := int(p.js.Conn().MaxPayload()) - dlqHeaderRoom; max > 0 && len(payload) > max {
		payload = payload[:max]
		m.Header.Set(schemas.HeaderDLQTruncated, "true")
	}
	m.Data = payload
	m.Header.Set(schemas.HeaderDLQReason, headerValue(reason))
	m.Header.Set(schemas.HeaderDLQSubject, headerValue(origSubject))
	m.Header.Set(schemas.HeaderDLQSequence, strconv.FormatUint(seq, 10))
	m.Header.Set(schemas.HeaderDLQLine, strconv.FormatUint(uint64(line), 10))
	m.Header.Set(schemas.HeaderDLQDetail, headerValue(detail))
	id := strconv.FormatUint(seq, 10) + "-" + strconv.FormatUint(uint64(line), 10)
	if _, err := p.js.PublishMsg(ctx, m, jetstream.WithMsgID(id), jetstream.WithExpectStream(schemas.StreamDLQ)); err != nil {
		return fmt.Errorf("cannot dead-letter line %d of message %d from %q to %q: %w", line, seq, origSubject, subject, err)
	}
	return nil
}

// newMsg returns a message carrying the schema version header.
func newMsg(subject string, data []byte) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(schemas.HeaderSchemaVersion, strconv.Itoa(schemas.SchemaVersion))
	return m
}

// headerValue makes s a valid one-line header value of at most maxDetailLen
// bytes: CR and LF become spaces and the cut falls on a UTF-8 boundary.
func headerValue(s string) string {
	if len(s) > maxDetailLen {
		n := maxDetailLen
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	if strings.ContainsAny(s, "\r\n") {
		s = strings.Map(func(r rune) rune {
			if r == '\r' || r == '\n' {
				return ' '
			}
			return r
		}, s)
	}
	return s
}

// pending is an async publish awaiting its PubAck.
type pending struct {
	f       jetstream.PubAckFuture
	kind    string // "alert" or "decision"
	id      string
	subject string
}

// waitAcks waits for every PubAck and returns the first error, or ctx's error.
// Messages the stream already held (a retry) are logged at debug level.
func (p *NATSPublisher) waitAcks(ctx context.Context, ps []pending) error {
	dups := 0
	for _, x := range ps {
		select {
		case ack := <-x.f.Ok():
			if ack.Duplicate {
				dups++
			}
		case err := <-x.f.Err():
			return fmt.Errorf("cannot publish %s %q to %q: %w", x.kind, x.id, x.subject, err)
		case <-ctx.Done():
			return fmt.Errorf("cannot publish %s %q to %q: %w", x.kind, x.id, x.subject, ctx.Err())
		}
	}
	if dups > 0 {
		p.log.Debug("nats publish dropped duplicates", "kind", ps[0].kind, "duplicates", dups, "messages", len(ps))
	}
	return nil
}
