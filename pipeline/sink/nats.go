package sink

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// dlqHeaderRoom is what a dead-letter message's headers may take of the max
// payload.
const dlqHeaderRoom = 4096

// MaxDeadLetterRecord bounds the copy of a record a dead letter keeps: enough
// to see what was wrong with it; the whole record stays in IOTWATCH_LOGS at
// the sequence the dead letter names. A flood of large bad records then
// costs the DLQ at most this much each (plus its entry line).
const MaxDeadLetterRecord = 4 << 10

// maxDetailLen bounds a dead letter's detail.
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

	signKeyID string
	signKey   ed25519.PrivateKey

	ttlMode atomic.Int32 // ttlUnknown until the first KV write asks the bucket
}

// Modes of the bucket of active blocks.
const (
	ttlUnknown int32 = iota
	ttlPerKey        // each value is written with its remaining TTL
	ttlNone          // the server cannot: expires_at alone ends a decision
)

// NewNATSPublisher returns a publisher on js that keeps active decisions in kv,
// the bucket schemas.KVActiveBlocks returned by bus.Ensure. log may be nil.
func NewNATSPublisher(js jetstream.JetStream, kv jetstream.KeyValue, log *slog.Logger) *NATSPublisher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &NATSPublisher{js: js, kv: kv, log: log}
}

// SetSigner makes the publisher sign decisions with priv under keyID: those
// it creates itself (the unblocks of LiftAllowlisted) and every decision given
// to PublishDecisions, after giving it its per-key revision. Without a signer,
// unsigned decisions get a revision too and signed ones are published as they
// are. Call it before publishing.
func (p *NATSPublisher) SetSigner(keyID string, priv ed25519.PrivateKey) error {
	if !schemas.ValidKeyID(keyID) || len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("cannot sign with key %q: invalid key id or a %d-byte private key", keyID, len(priv))
	}
	p.signKeyID, p.signKey = keyID, priv
	return nil
}

// Signs reports whether the publisher signs the decisions it publishes
// (SetSigner was called).
func (p *NATSPublisher) Signs() bool { return p.signKey != nil }

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
// KV bucket of active blocks under schemas.KVKey(scope, value):
//
//   - a block or throttle that is not a dry run is put with the decision as
//     value, and, where the bucket supports per-key TTLs (bus.KeyTTL), with
//     the time left until its ExpiresAt rounded up to a second, so the server
//     removes it then (the first write logs which mode the bucket is in);
//     unless the key already holds it (a retry, a redelivery) or the unblock
//     that names it (a redelivered block that an analyst already lifted);
//   - an unblock is put as the value too, replacing the decision it lifts
//     (schemas.Lifts): a signed value that enforcement points verify, where a
//     KV delete could not be authenticated. It keeps the lifted decision's
//     remaining TTL, so an enforcement point that was away still finds it. When
//     the key holds a decision the unblock does not lift (a newer block), the
//     key is left alone; the unblock stays in the stream's history;
//   - a dry run (action would_block, or DryRun set) never touches the bucket.
//
// Revisions. Every decision that is not a dry run, when the publisher signs
// (SetSigner) or the decision is unsigned, is given its schemas.Revision
// before it is published: schemas.NextRevision of the revision of the
// decision the key holds (read from the bucket), so blocks of the pipeline
// and unblocks of `iotwatch unblock`, different processes, share one
// increasing sequence per key. The KV write then expects the key's last
// entry to be the one read (compare and swap); if another writer got in
// between, the key is read again, the decision revised and signed again, and
// written over the newer state (or left out, as above). The stream copy keeps
// the revision first given (a retry is dropped by the duplicate window).
// ds[i] is updated in place with the revision and signature written.
//
// It returns once every KV write is acknowledged. On error the caller retries
// the whole slice: stream copies are dropped by the duplicate window and KV
// writes are idempotent. A decision with an empty ID or value, an unknown
// action or an unknown scope is rejected before anything is published.
func (p *NATSPublisher) PublishDecisions(ctx context.Context, ds []schemas.Decision) error {
	for i := range ds {
		if err := checkDecision(&ds[i]); err != nil {
			return err
		}
	}
	futures := make([]pending, 0, len(ds))
	values := make([][]byte, len(ds))
	keys := make([]keyState, len(ds))
	for i := range ds {
		d := &ds[i]
		if p.revises(d) {
			st, err := p.readKey(ctx, schemas.KVKey(d.Scope, d.Value))
			if err != nil {
				return fmt.Errorf("cannot publish decision %q: %w", d.ID, err)
			}
			if err := p.revise(d, st); err != nil {
				return err
			}
			keys[i] = st
		}
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
		if d.DryRun || d.Action == schemas.ActionDryRunBlock {
			continue
		}
		key := schemas.KVKey(d.Scope, d.Value)
		var err error
		if p.revises(d) {
			err = p.putRevised(ctx, key, d, values[i], keys[i])
		} else if d.Action == schemas.ActionUnblock {
			err = p.putUnblock(ctx, key, d, values[i])
		} else {
			err = p.putKV(ctx, key, values[i], d.CreatedAt, d.ExpiresAt, nil)
		}
		if err != nil {
			return fmt.Errorf("cannot write decision %q to KV bucket %q under %q: %w", d.ID, p.kv.Bucket(), key, err)
		}
	}
	return nil
}

// revises reports whether PublishDecisions gives d its revision: a decision
// for the bucket that the publisher signs, or that is unsigned.
func (p *NATSPublisher) revises(d *schemas.Decision) bool {
	return !d.DryRun && d.Action != schemas.ActionDryRunBlock && (p.signKey != nil || d.Signature == "")
}

// keyState is what the bucket holds under a key: the revision of its last
// entry (a delete or purge marker included; 0: none) and the decision it
// holds (nil: none, or a value that is not a decision).
type keyState struct {
	kvRev uint64
	cur   *schemas.Decision
}

// readKey returns what the bucket holds under key.
func (p *NATSPublisher) readKey(ctx context.Context, key string) (keyState, error) {
	e, err := p.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err := p.lastRevision(ctx, key)
		return keyState{kvRev: rev}, err
	case err != nil:
		return keyState{}, fmt.Errorf("cannot read %q from KV bucket %q: %w", key, p.kv.Bucket(), err)
	}
	st := keyState{kvRev: e.Revision()}
	var d schemas.Decision
	if json.Unmarshal(e.Value(), &d) == nil {
		st.cur = &d
	}
	return st, nil
}

// revise gives d the revision that follows the key's state st, and signs it
// when the publisher signs.
func (p *NATSPublisher) revise(d *schemas.Decision, st keyState) error {
	var prev uint64
	if st.cur != nil {
		prev = st.cur.Revision
	}
	d.Revision = schemas.NextRevision(prev, time.Now())
	if p.signKey == nil {
		return nil
	}
	if err := schemas.SignDecision(d, p.signKeyID, p.signKey); err != nil {
		return fmt.Errorf("cannot publish decision %q: %w", d.ID, err)
	}
	return nil
}

// liftsHeld reports whether the unblock u, about to be revised, lifts the
// decision cur that the bucket holds: schemas.Lifts by name or by creation
// time, since u's revision, given now, would make it newer than anything.
func liftsHeld(u, cur *schemas.Decision) bool {
	x, y := *u, *cur
	x.Revision, y.Revision = 0, 0
	return schemas.Lifts(&x, &y)
}

// putRevised writes the revised decision d (encoded as value) under key,
// expecting the key's state st; when the key changed meanwhile, it reads it
// again, revises d and tries again.
func (p *NATSPublisher) putRevised(ctx context.Context, key string, d *schemas.Decision, value []byte, st keyState) error {
	for attempt := range 5 {
		if attempt > 0 {
			var err error
			if st, err = p.readKey(ctx, key); err != nil {
				return err
			}
			if err := p.revise(d, st); err != nil {
				return err
			}
			if value, err = json.Marshal(d); err != nil {
				return fmt.Errorf("cannot encode decision %q: %w", d.ID, err)
			}
		}
		created, expires := d.CreatedAt, d.ExpiresAt
		cur := st.cur
		switch {
		case cur != nil && cur.ID == d.ID:
			return nil // already written: a retry or a redelivery
		case d.Action != schemas.ActionUnblock:
			if cur != nil && cur.Action == schemas.ActionUnblock && cur.ID == schemas.UnblockID(d.ID) {
				p.log.Info("block already lifted is not written again", "decision", d.ID, "unblock", cur.ID, "key", key)
				return nil
			}
		case cur == nil, cur.Action == schemas.ActionUnblock:
			created, expires = time.Time{}, time.Time{}
		case !liftsHeld(d, cur):
			p.log.Info("unblock leaves a newer decision in place", "unblock", d.ID, "decision", cur.ID, "key", key)
			return nil
		default:
			created, expires = cur.CreatedAt, cur.ExpiresAt
		}
		err := p.putKV(ctx, key, value, created, expires, &st.kvRev)
		if !isWrongLastSequence(err) {
			return err
		}
		// The key changed between the read and the write: look again.
	}
	return fmt.Errorf("cannot write decision %q: key %q keeps changing", d.ID, key)
}

// putUnblock writes the unblock u (encoded as value) over the decision it
// lifts, unless the key meanwhile holds one it does not lift.
func (p *NATSPublisher) putUnblock(ctx context.Context, key string, u *schemas.Decision, value []byte) error {
	for range 3 {
		var created, expires time.Time
		var rev uint64
		cur, err := p.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			// Nothing to lift in the bucket; an enforcement point may still
			// hold the decision (its key deleted by hand): the signed unblock
			// lets it lift it. The write still expects the key's last
			// revision (a delete marker, or none), so that a block written
			// meanwhile is seen on the next pass, not overwritten.
			if rev, err = p.lastRevision(ctx, key); err != nil {
				return err
			}
		case err != nil:
			return err
		default:
			rev = cur.Revision()
			var d schemas.Decision
			if json.Unmarshal(cur.Value(), &d) == nil {
				switch {
				case d.Action == schemas.ActionUnblock:
					if d.ID == u.ID {
						return nil // a retry: already written
					}
				case !schemas.Lifts(u, &d):
					p.log.Info("unblock leaves a newer decision in place", "unblock", u.ID, "decision", d.ID, "key", key)
					return nil
				default:
					created, expires = d.CreatedAt, d.ExpiresAt
				}
			}
		}
		err = p.putKV(ctx, key, value, created, expires, &rev)
		if !isWrongLastSequence(err) {
			return err
		}
		// The key changed between the read and the write: look again.
	}
	return fmt.Errorf("cannot write unblock %q: key %q keeps changing", u.ID, key)
}

// isWrongLastSequence reports whether err is JetStream's answer to an
// expected last subject sequence that did not match.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// lastRevision returns the revision of key's last entry, a delete or purge
// marker included (which KeyValue.Get does not return), or 0 when the key
// has none.
func (p *NATSPublisher) lastRevision(ctx context.Context, key string) (uint64, error) {
	name := bus.KVStream(p.kv.Bucket())
	stream, err := p.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("cannot look up stream %q: %w", name, err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, bus.KVSubject(p.kv.Bucket(), key))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("cannot read the last entry of key %q: %w", key, err)
	}
	return m.Sequence, nil
}

// putKV writes value under key, with the per-key TTL of a decision created
// and expiring at those times when the bucket supports it (none for a zero
// expires), and, when rev is not nil, only if the key's last revision is
// still *rev (0: the key has no entry at all).
func (p *NATSPublisher) putKV(ctx context.Context, key string, value []byte, created, expires time.Time, rev *uint64) error {
	var opts []jetstream.PublishOpt
	if rev != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*rev))
	}
	if !expires.IsZero() {
		perKey, err := p.perKeyTTL(ctx)
		if err != nil {
			return err
		}
		if perKey {
			opts = append(opts, jetstream.WithMsgTTL(keyTTL(created, expires, time.Now())))
		}
	}
	// KeyValue.Put takes neither option: publish to the key's subject as Put does.
	_, err := p.js.PublishMsg(ctx, &nats.Msg{Subject: bus.KVSubject(p.kv.Bucket(), key), Data: value}, opts...)
	return err
}

// keyTTL is the per-key TTL of a decision created and expiring at those
// times: the time left until expires, rounded up to a whole second (the
// server's resolution, so the server never removes a decision before its
// expires_at), at least 1 s. A decision that has already expired by now (event
// times of a replay, or of a pipeline far behind) stays for its whole
// duration instead, so the bucket shows what was decided for a while;
// enforcement points never enforce it.
func keyTTL(created, expires, now time.Time) time.Duration {
	left := expires.Sub(now)
	if left <= 0 && !created.IsZero() {
		left = expires.Sub(created)
	}
	if left <= time.Second {
		return time.Second
	}
	return (left + time.Second - 1).Truncate(time.Second)
}

// perKeyTTL reports whether the bucket accepts per-key TTLs, asking it once
// and logging the answer.
func (p *NATSPublisher) perKeyTTL(ctx context.Context) (bool, error) {
	switch p.ttlMode.Load() {
	case ttlPerKey:
		return true, nil
	case ttlNone:
		return false, nil
	}
	ok, err := bus.KeyTTL(ctx, p.kv)
	if err != nil {
		return false, err
	}
	mode := ttlNone
	if ok {
		mode = ttlPerKey
	}
	if p.ttlMode.Swap(mode) == ttlUnknown {
		if ok {
			p.log.Info("active blocks expire from the KV bucket by per-key TTL", "bucket", p.kv.Bucket())
		} else {
			p.log.Info("active blocks stay in the KV bucket after they expire: the server has no per-key TTL (nats-server before 2.11), enforcement points honour expires_at", "bucket", p.kv.Bucket())
		}
	}
	return ok, nil
}

func checkDecision(d *schemas.Decision) error {
	switch d.Action {
	case schemas.ActionBlock, schemas.ActionThrottle, schemas.ActionUnblock, schemas.ActionDryRunBlock:
	default:
		return fmt.Errorf("cannot publish decision %q: unknown action %q", d.ID, d.Action)
	}
	if !schemas.ValidScope(d.Scope) {
		return fmt.Errorf("cannot publish decision %q: unknown scope %q", d.ID, d.Scope)
	}
	if d.ID == "" || d.Value == "" {
		return fmt.Errorf("cannot publish decision %q (%s %s=%q): id and value must be set", d.ID, d.Action, d.Scope, d.Value)
	}
	return nil
}

// DeadLetters publishes letters, the undecodable records of the log message
// seq on origSubject (IOTWATCH_LOGS), on iotwatch.dlq.<reason> (stream
// IOTWATCH_DLQ): those with the same reason together, in one message or, when
// they do not fit the server's max payload, a few, each in the body
// schemas.ParseDeadLetters reads, with the headers schemas.HeaderDLQReason,
// HeaderDLQSubject, HeaderDLQSequence, HeaderDLQLine (its first entry's line)
// and HeaderDLQCount. A record longer than MaxDeadLetterRecord is cut to it
// (its entry keeps the whole length); a detail is cut to 1 KiB. It waits for
// every PubAck. A message's Nats-Msg-Id is "<seq>-<first line>", so
// dead-lettering a redelivered message again stores nothing new; a caller that
// gets an error retries the same call.
//
// It sorts letters by reason (stably) and may modify their Record, Size and
// Detail; it does not retain them.
func (p *NATSPublisher) DeadLetters(ctx context.Context, origSubject string, seq uint64, letters []schemas.DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	slices.SortStableFunc(letters, func(a, b schemas.DeadLetter) int { return strings.Compare(a.Reason, b.Reason) })
	// A message holds what the max payload leaves after the headers.
	maxBody := int(p.js.Conn().MaxPayload()) - dlqHeaderRoom
	maxRecord := max(0, min(MaxDeadLetterRecord, maxBody-2*maxDetailLen))
	for i := range letters {
		d := &letters[i]
		if d.Size < len(d.Record) {
			d.Size = len(d.Record)
		}
		if len(d.Record) > maxRecord {
			d.Record = d.Record[:maxRecord]
		}
		d.Detail = headerValue(d.Detail)
	}
	var acks []jetstream.PubAckFuture
	for start := 0; start < len(letters); {
		// One message: letters[start:end], same reason, fitting maxBody.
		var body []byte
		end := start
		var prev *schemas.DeadLetter
		for end < len(letters) && letters[end].Reason == letters[start].Reason {
			d := &letters[end]
			if end > start && len(body)+schemas.DeadLetterEntrySize(d, prev) > maxBody {
				break
			}
			body = schemas.AppendDeadLetter(body, d, prev)
			prev = d
			end++
		}
		first := &letters[start]
		m := nats.NewMsg(schemas.SubjectDLQPrefix + "." + bus.SubjectToken(first.Reason))
		m.Data = body
		m.Header.Set(schemas.HeaderDLQReason, headerValue(first.Reason))
		m.Header.Set(schemas.HeaderDLQSubject, headerValue(origSubject))
		m.Header.Set(schemas.HeaderDLQSequence, strconv.FormatUint(seq, 10))
		m.Header.Set(schemas.HeaderDLQLine, strconv.FormatUint(uint64(first.Line), 10))
		m.Header.Set(schemas.HeaderDLQCount, strconv.Itoa(end-start))
		id := strconv.FormatUint(seq, 10) + "-" + strconv.FormatUint(uint64(first.Line), 10)
		f, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(id), jetstream.WithExpectStream(schemas.StreamDLQ))
		if err != nil {
			return fmt.Errorf("cannot dead-letter %d records of message %d from %q: %w", end-start, seq, origSubject, err)
		}
		acks = append(acks, f)
		start = end
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("cannot dead-letter records of message %d from %q to %q: %w", seq, origSubject, f.Msg().Subject, err)
		case <-ctx.Done():
			return fmt.Errorf("cannot dead-letter records of message %d from %q: %w", seq, origSubject, ctx.Err())
		}
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
