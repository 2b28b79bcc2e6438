package unblock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// Held returns the decision KV bucket kv holds for scope and value (nil when
// it holds none) and whether it is an active block or throttle at now: not an
// unblock, and not expired.
func Held(ctx context.Context, kv jetstream.KeyValue, scope, value string, now time.Time) (*schemas.Decision, bool, error) {
	d, err := currentDecision(ctx, kv, schemas.KVKey(scope, value))
	if err != nil || d == nil {
		return d, false, err
	}
	return d, isActive(d, now), nil
}

// isActive reports whether d restricts anything at now.
func isActive(d *schemas.Decision, now time.Time) bool {
	return d.Action != schemas.ActionUnblock && (d.ExpiresAt.IsZero() || d.ExpiresAt.After(now))
}

// Active returns up to max active blocks and throttles of scope in kv at now,
// latest expiry first, and how many there are in all.
func Active(ctx context.Context, kv jetstream.KeyValue, scope string, now time.Time, max int) ([]schemas.Decision, int, error) {
	keys, err := kv.ListKeysFiltered(ctx, scope+".>")
	if err != nil {
		return nil, 0, fmt.Errorf("cannot list %q in KV bucket %q: %w", scope, kv.Bucket(), err)
	}
	var active []schemas.Decision
	for key := range keys.Keys() {
		if !strings.HasPrefix(key, scope+".") {
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			keys.Stop()
			return nil, 0, fmt.Errorf("cannot read %q from KV bucket %q: %w", key, kv.Bucket(), err)
		}
		var d schemas.Decision
		if json.Unmarshal(e.Value(), &d) != nil || !isActive(&d, now) {
			continue
		}
		active = append(active, d)
	}
	sort.Slice(active, func(i, j int) bool { return active[i].ExpiresAt.After(active[j].ExpiresAt) })
	n := len(active)
	return active[:min(n, max)], n, nil
}
