package natstest

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// BalanceChecks counts the balance checks of a set of scorer instances from
// their presence keys (schemas.KVScorers: one key per instance, rewritten at
// each check): the distinct revisions each key reaches after every key was
// present. The zero value with Names set is ready.
type BalanceChecks struct {
	Names []string // the instances' presence keys
	since uint64   // the latest revision once every key was present
	seen  map[string]map[uint64]bool
}

// Observe reads the keys from kv and reports whether every instance checked
// the balance at least n times since all were present, and what it read
// (for a wait's message).
func (b *BalanceChecks) Observe(ctx context.Context, kv jetstream.KeyValue, n int) (bool, string) {
	revs := map[string]uint64{}
	for _, name := range b.Names {
		if e, err := kv.Get(ctx, name); err == nil {
			revs[name] = e.Revision()
		}
	}
	if b.since == 0 && len(revs) == len(b.Names) {
		for _, r := range revs {
			b.since = max(b.since, r)
		}
	}
	if b.seen == nil {
		b.seen = map[string]map[uint64]bool{}
	}
	done := b.since > 0
	for _, name := range b.Names {
		if r := revs[name]; b.since > 0 && r > b.since {
			if b.seen[name] == nil {
				b.seen[name] = map[uint64]bool{}
			}
			b.seen[name][r] = true
		}
		done = done && len(b.seen[name]) >= n
	}
	return done, fmt.Sprintf("presence key revisions %v since %d", revs, b.since)
}
