// Package unblock lifts an active block (or throttle) before its TTL ends: the
// SOC analyst's 'iotwatch unblock'. The unblock is a signed decision written
// over the block in KV bucket iotwatch_blocks and published on the decision
// stream, so that enforcement points verify it as they verify blocks.
package unblock

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// Request is an analyst's unblock of one scope and value.
type Request struct {
	// Scope and Value name the block to lift, exactly as in the block
	// decision (the caller checks them).
	Scope, Value string
	// Reason says why, for the audit trail; the unblock's reason is
	// schemas.ReasonAnalystUnblock followed by it.
	Reason string
	// Issuer names who lifts the block.
	Issuer string
	// KeyID and Key sign the unblock; enforcement points must trust the key.
	KeyID string
	Key   ed25519.PrivateKey
	// Now is the unblock's creation time.
	Now time.Time
}

// Result is what Lift found and did.
type Result struct {
	// Held is the decision the bucket held for the scope and value; nil when
	// it held none.
	Held *schemas.Decision
	// Unblock is the unblock decision, signed; Published reports whether it
	// was published: it is not when Held is already an unblock.
	Unblock   schemas.Decision
	Published bool
}

// Lift publishes a signed unblock for r's scope and value. The unblock names
// the block it lifts (its id is schemas.UnblockID of the block's, and it
// carries the block's tenant, device and alert); when the bucket holds no
// decision for the scope and value, it gets an id of its own and, by its
// time, still lifts any older block that enforcement points hold. When the
// bucket already holds an unblock, Lift publishes nothing. The unblock's
// revision follows the key's current one, so enforcement points order it
// after the block it lifts and reject that block if it is replayed.
func Lift(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, r Request, log *slog.Logger) (Result, error) {
	key := schemas.KVKey(r.Scope, r.Value)
	held, err := currentDecision(ctx, kv, key)
	if err != nil {
		return Result{}, err
	}
	now := r.Now.UTC()
	u := schemas.Decision{
		Action: schemas.ActionUnblock, Scope: r.Scope, Value: r.Value,
		CreatedAt: now, Reason: schemas.ReasonAnalystUnblock + ": " + r.Reason,
		Issuer: r.Issuer, SchemaV: schemas.SchemaVersion,
	}
	switch {
	case held == nil:
		// Nothing in the bucket: an id of its own; by its time it still
		// lifts an older block that enforcement points hold.
		u.ID = "u-" + strconv.FormatUint(schemas.HashString(key+"/"+now.Format(time.RFC3339Nano)), 16)
	case held.Action == schemas.ActionUnblock:
		return Result{Held: held}, nil
	default:
		u.ID = schemas.UnblockID(held.ID)
		u.Tenant, u.Device, u.AlertID = held.Tenant, held.Device, held.AlertID
	}
	// The publisher gives the unblock the revision that follows the key's
	// (schemas.NextRevision) and signs it with the analyst's key.
	pub := sink.NewNATSPublisher(js, kv, log)
	if err := pub.SetSigner(r.KeyID, r.Key); err != nil {
		return Result{}, err
	}
	ds := []schemas.Decision{u}
	if err := pub.PublishDecisions(ctx, ds); err != nil {
		return Result{}, fmt.Errorf("cannot publish unblock of %s=%q: %w", r.Scope, r.Value, err)
	}
	return Result{Held: held, Unblock: ds[0], Published: true}, nil
}

// currentDecision returns the decision the bucket holds under key, nil when
// it holds none, or an error for a value that is not a decision.
func currentDecision(ctx context.Context, kv jetstream.KeyValue, key string) (*schemas.Decision, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read %q from KV bucket %q: %w", key, kv.Bucket(), err)
	}
	var d schemas.Decision
	if err := json.Unmarshal(e.Value(), &d); err != nil {
		return nil, fmt.Errorf("cannot decode the decision under %q in KV bucket %q: %w", key, kv.Bucket(), err)
	}
	return &d, nil
}
