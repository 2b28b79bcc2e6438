package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

// LiftAllowlisted lifts the active blocks that allow now covers: it reads the
// active set from kv (the bucket of active blocks), computes the unblocks with
// decide.Lifts (device and api_key scopes by name, ip scope by CIDR
// containment, tenant scope never; expired and dry-run entries are left
// alone) and publishes them with pub.PublishDecisions, which stores each on
// iotwatch.decisions.unblock and writes it over the block in the bucket. It returns
// how many blocks it lifted.
//
// Entries that do not decode as a decision, or whose key is not
// schemas.KVKey of their scope and value, are skipped: they are not iotwatch's
// and enforcement points reject them. The unblocks are signed with the key of
// pub.SetSigner (enforcement points that require signatures ignore unsigned
// ones) and replace the lifted block in the bucket. Calling it again is safe:
// a lifted block is no longer a block in the bucket, and a retry after an
// error publishes the same unblock ids, which the stream's duplicate window
// drops. Call it at start-up, after bus.Ensure, with the allowlist of the
// decide config.
func LiftAllowlisted(ctx context.Context, kv jetstream.KeyValue, allow *decide.Allowlist, pub *NATSPublisher, issuer string, now time.Time) (int, error) {
	active, err := activeDecisions(ctx, kv)
	if err != nil {
		return 0, err
	}
	lifts := decide.Lifts(allow, active, issuer, now)
	if len(lifts) == 0 {
		return 0, nil
	}
	if pub.signKey != nil {
		for i := range lifts {
			if err := schemas.SignDecision(&lifts[i], pub.signKeyID, pub.signKey); err != nil {
				return 0, err
			}
		}
	}
	if err := pub.PublishDecisions(ctx, lifts); err != nil {
		return 0, fmt.Errorf("cannot lift %d allowlisted blocks: %w", len(lifts), err)
	}
	return len(lifts), nil
}

// activeDecisions returns the decisions in kv, ordered by key.
func activeDecisions(ctx context.Context, kv jetstream.KeyValue) ([]schemas.Decision, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("cannot read KV bucket %q: %w", kv.Bucket(), err)
	}
	defer w.Stop()
	type keyed struct {
		key string
		d   schemas.Decision
	}
	var all []keyed
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot read KV bucket %q: %w", kv.Bucket(), ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("cannot read KV bucket %q: the watch was closed", kv.Bucket())
			}
			if e == nil { // every current value has been delivered
				sort.Slice(all, func(i, j int) bool { return all[i].key < all[j].key })
				ds := make([]schemas.Decision, len(all))
				for i := range all {
					ds[i] = all[i].d
				}
				return ds, nil
			}
			var d schemas.Decision
			if json.Unmarshal(e.Value(), &d) != nil || schemas.KVKey(d.Scope, d.Value) != e.Key() {
				continue
			}
			all = append(all, keyed{e.Key(), d})
		}
	}
}
