package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/decide"
)

// Allowlist keeps an AllowlistRef equal to an instance's own entries (its
// --allowlist) merged with the shared bucket's (schemas.KVAllowlist), as
// the bucket changes. Run it with WatchAllowlist.
type Allowlist struct {
	kv     jetstream.KeyValue
	static []string
	ref    *decide.AllowlistRef
	log    *slog.Logger
	labels map[string][]string // the bucket's entries by key
	// changed, when set, is called after each change is in force, with the
	// merged allowlist (the pipeline lifts the blocks it now covers).
	changed func(*decide.Allowlist)
}

// NewAllowlist returns a watcher that keeps ref equal to static merged
// with kv's entries. changed, when not nil, is called (from the watching
// goroutine) with every allowlist put in force, the first included. log
// may be nil.
func NewAllowlist(kv jetstream.KeyValue, static []string, ref *decide.AllowlistRef, changed func(*decide.Allowlist), log *slog.Logger) *Allowlist {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Allowlist{kv: kv, static: static, ref: ref, changed: changed, log: log, labels: map[string][]string{}}
}

// Run watches the bucket until ctx ends. It puts the bucket's entries in
// force once it has read them all, then signals ready (closes it; may be
// nil) and applies every later put or delete as it comes: within a second
// of the write, in practice. An entry that does not parse (a CIDR with a
// typo) is logged with its key and skipped; the rest of the bucket applies.
// While NATS is unreachable the allowlist in force stays (the watch's
// ordered consumer re-creates itself, from where it stopped, once the
// connection returns). It returns nil
// when ctx ends, or an error if the watch cannot start.
func (a *Allowlist) Run(ctx context.Context, ready chan<- struct{}) error {
	w, err := a.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("cannot watch KV bucket %q: %w", a.kv.Bucket(), err)
	}
	defer w.Stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // every entry present at the start has been read
				a.apply()
				initial = false
				if ready != nil {
					close(ready)
					ready = nil
				}
				continue
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				a.labels[e.Key()] = splitEntries(string(e.Value()))
			default: // delete, purge, or a TTL marker
				delete(a.labels, e.Key())
			}
			if !initial {
				a.apply()
			}
		}
	}
}

// splitEntries splits a bucket value into entries: one per line (commas
// also separate), blank lines and lines starting with # skipped.
func splitEntries(v string) []string {
	var out []string
	for _, line := range strings.Split(v, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, e := range strings.Split(line, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

// apply puts the static entries and the bucket's in force.
func (a *Allowlist) apply() {
	entries := slices.Clone(a.static) // validated with the flags
	for _, k := range slices.Sorted(maps.Keys(a.labels)) {
		for _, e := range a.labels[k] {
			if _, err := decide.ParseAllowlist([]string{e}); err != nil {
				a.log.Warn("allowlist entry skipped", "bucket", a.kv.Bucket(), "key", k, "err", err)
				continue
			}
			entries = append(entries, e)
		}
	}
	n := len(entries) - len(a.static)
	merged, err := decide.ParseAllowlist(entries)
	if err != nil {
		a.log.Error("cannot parse the instance's allowlist: keeping the one in force", "err", err)
		return
	}
	a.ref.Store(merged)
	a.log.Info("allowlist in force", "bucket_entries", n, "own_entries", len(a.static), "entries", merged.Len())
	if a.changed != nil {
		a.changed(merged)
	}
}
