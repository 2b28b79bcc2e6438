package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// keyRev is the last decision applied for one KV key. It outlives the
// decision (until), so that a decision older than it, replayed into the
// bucket after it was lifted or replaced, is rejected as stale.
type keyRev struct {
	rev   uint64 // schemas.Decision.Revision
	id    string // decision id
	until int64  // unix nanoseconds: forgotten after this (when nothing is held for the key)
}

// stale reports whether d is older than the last decision applied for key:
// a lower Revision, or the same non-zero Revision on another decision.
// Decisions without a revision (signed before revisions existed) are ordered
// among themselves by the bucket and schemas.Lifts, as before.
func (c *Client) stale(key string, d *schemas.Decision) (keyRev, bool) {
	last, ok := c.revs[key]
	if !ok {
		return last, false
	}
	return last, d.Revision < last.rev || (d.Revision == last.rev && d.Revision != 0 && d.ID != last.id)
}

// record makes d the last decision applied for key. The record is kept at
// least Options.RevisionRetention from now and while a decision seen for the
// key could be live: until expires (unix nanoseconds; 0 for an unblock, and
// for a decision that never expires the record is kept for good).
func (c *Client) record(key string, d *schemas.Decision, expires int64) {
	r := c.revs[key]
	r.rev, r.id = d.Revision, d.ID
	keep := c.nowNanos() + int64(c.o.RevisionRetention)
	if d.Action != schemas.ActionUnblock && expires == 0 {
		keep = math.MaxInt64
	}
	r.until = max(r.until, keep, expires)
	c.revs[key] = r
	c.dirty = true
}

// historySubjects are the subjects of decisions in the decision stream (not
// receipts).
var historySubjects = []string{
	schemas.SubjectDecisionsPrefix + "." + schemas.ActionBlock,
	schemas.SubjectDecisionsPrefix + "." + schemas.ActionThrottle,
	schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock,
}

// historyTimeout bounds the read of the decision history.
const historyTimeout = 30 * time.Second

// readHistory rebuilds the cache from the decision stream's history (every
// block, throttle and unblock still in schemas.StreamDecisions), for a Client
// that starts without a state file: each verified decision is folded in
// stream order by the same rules as the bucket's values (revisions, signed
// unblocks), and the decisions still live at the end are applied, with their
// receipts. The bucket's sync that follows then finds them: a key missing
// from the bucket, or deleted, lifts nothing without a signed unblock.
// Decisions that fail verification are skipped silently (the bucket's copy
// of a bad one is counted).
func (c *Client) readHistory(ctx context.Context) error {
	// A server that refuses the consumer (permissions) answers nothing: bound
	// the wait so the bucket's sync still starts.
	ctx, cancel := context.WithTimeout(ctx, historyTimeout)
	defer cancel()
	cons, err := c.js.OrderedConsumer(ctx, schemas.StreamDecisions, jetstream.OrderedConsumerConfig{FilterSubjects: historySubjects})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // nothing was ever decided
	}
	if err != nil {
		return fmt.Errorf("cannot read stream %q: %w", schemas.StreamDecisions, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("cannot read stream %q: %w", schemas.StreamDecisions, err)
	}
	held := map[string]*entry{}
	var n uint64
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, historyBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("cannot read stream %q: %w", schemas.StreamDecisions, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			n++
			c.fold(held, m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("cannot read stream %q: %w", schemas.StreamDecisions, err)
		}
		if got == 0 {
			return fmt.Errorf("cannot read stream %q: %d decisions announced, none delivered", schemas.StreamDecisions, pending)
		}
		pending -= uint64(got)
	}
	c.historyRead.Add(n)
	now := c.nowNanos()
	for key, e := range held {
		if !e.live(now) {
			continue
		}
		c.entries[key] = e
		c.dirty = true
		c.applied.Add(1)
		c.receipt(&e.d, e.d.Action, schemas.SignatureKeyID(&e.d))
	}
	c.log.Info("enforcement cache rebuilt from the decision history", "stream", schemas.StreamDecisions, "decisions", n, "active", len(c.entries))
	return nil
}

// fold applies one decision of the history to held (the live decision per
// key) and the revisions.
func (c *Client) fold(held map[string]*entry, raw []byte) {
	var probe struct {
		Scope string `json:"scope"`
		Value string `json:"value"`
	}
	if json.Unmarshal(raw, &probe) != nil {
		return
	}
	key := schemas.KVKey(probe.Scope, probe.Value)
	e, _, err := c.parse(key, 0, raw)
	if err != nil {
		return
	}
	if _, stale := c.stale(key, &e.d); stale {
		return
	}
	old := held[key]
	if e.d.Action == schemas.ActionUnblock {
		switch {
		case old == nil:
			c.record(key, &e.d, 0)
		case schemas.Lifts(&e.d, &old.d):
			c.record(key, &e.d, old.expires)
			delete(held, key)
		}
		return
	}
	c.record(key, &e.d, e.expires)
	held[key] = e
}
