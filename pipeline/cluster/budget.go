package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// BudgetConfig configures a KV budget.
type BudgetConfig struct {
	// Name is the cap's name in the bucket (schemas.BudgetBlocks for new
	// blocks): one key per name and minute.
	Name string
	// Max is the cap: takes per event-time minute for the whole cluster
	// (> 0).
	Max int
	// Instances is how many instances share the cap (default 1). While the
	// bucket cannot be reached, this instance grants at most
	// LocalShare = Max / Instances (rounded down) per minute on its own,
	// counting the takes the bucket granted it in that minute, so that
	// Instances instances cut off together never exceed Max.
	Instances int
	// Timeout bounds the bucket round trips of one take (default
	// DefaultBudgetTimeout): a take never waits longer for the bucket.
	Timeout time.Duration
	// Retry is how long after a failed round trip the budget answers from
	// its local share alone before it tries the bucket again (default
	// DefaultBudgetRetry): a bucket that cannot be reached costs one
	// Timeout per Retry, not one per take.
	Retry time.Duration
}

// Defaults of BudgetConfig.
const (
	DefaultBudgetTimeout = 2 * time.Second
	DefaultBudgetRetry   = 10 * time.Second
)

// maxConflicts bounds the compare-and-set attempts of one take: beyond it,
// the take is refused (another instance keeps winning the key, so the
// minute is busy; refusing is the conservative answer).
const maxConflicts = 16

// KVBudget is a decide.Budget shared by every instance through the bucket
// schemas.KVBudgets: the key KVBudgetKey(name, minute) lists the tokens
// granted in that minute (8 bytes each), and a take appends its token with
// the key's last revision (Create for the minute's first, Update after), so
// two instances never both take the last place: the one whose write lands
// second gets a revision conflict, reads again and finds the minute full.
// That is JetStream's own compare-and-set (a per-subject expected last
// sequence), so no lock, lease or leader is needed. A token found in the
// list is granted again without counting: a redelivered event gets the
// block it got the first time, from whichever instance scores it.
//
// Minutes known to be full are remembered, so that in a flood the refused
// takes cost no round trip. When the bucket cannot be reached, takes are
// answered from the local share (BudgetConfig.Instances), and the bucket is
// tried again after Retry. Safe for concurrent use; takes are serialised.
type KVBudget struct {
	kv  jetstream.KeyValue
	cfg BudgetConfig
	log *slog.Logger

	mu        sync.Mutex
	full      map[int64][]byte // minutes the bucket showed full: their tokens
	granted   map[int64]int    // takes granted to this instance, by minute
	downUntil time.Time        // answer from the local share until then

	// Fallbacks counts the takes answered from the local share.
	Fallbacks atomic.Uint64
	// Conflicts counts revision conflicts (another instance wrote first).
	Conflicts atomic.Uint64
}

// NewKVBudget returns a budget over kv (the bucket schemas.KVBudgets, as
// bus.Ensure creates it). log may be nil.
func NewKVBudget(kv jetstream.KeyValue, cfg BudgetConfig, log *slog.Logger) *KVBudget {
	if cfg.Instances < 1 {
		cfg.Instances = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultBudgetTimeout
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultBudgetRetry
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &KVBudget{kv: kv, cfg: cfg, log: log.With("budget", cfg.Name),
		full: map[int64][]byte{}, granted: map[int64]int{}}
}

// WriteMetrics writes b's counters in the Prometheus text format, labelled
// with its name.
func (b *KVBudget) WriteMetrics(w io.Writer) {
	for _, m := range []struct {
		name, help string
		v          uint64
	}{
		{schemas.MetricBudgetLocal, "Takes of a cluster-wide cap answered from this instance's local share (the KV bucket was unreachable).", b.Fallbacks.Load()},
		{schemas.MetricBudgetConflicts, "Revision conflicts met counting a cluster-wide cap (another instance wrote first).", b.Conflicts.Load()},
	} {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s{budget=%q} %d\n", m.name, m.help, m.name, m.name, b.cfg.Name, m.v)
	}
}

// LocalShare is what this instance grants per minute on its own while the
// bucket cannot be reached.
func (b *KVBudget) LocalShare() int { return b.cfg.Max / b.cfg.Instances }

// Take implements decide.Budget.
func (b *KVBudget) Take(m int64, token uint64) bool {
	if b.cfg.Max <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if v, ok := b.full[m]; ok {
		return hasToken(v, token)
	}
	if time.Now().Before(b.downUntil) {
		return b.fallback(m)
	}
	ok, full, err := b.take(m, token)
	if err != nil {
		b.downUntil = time.Now().Add(b.cfg.Retry)
		b.log.Warn("cluster budget unreachable: granting from the local share", "err", err,
			"local_share", b.LocalShare(), "retry_in", b.cfg.Retry)
		return b.fallback(m)
	}
	if ok {
		b.granted[m]++
	}
	if full != nil {
		b.full[m] = full
	}
	b.prune(m)
	return ok
}

// fallback answers a take of minute m from the local share.
func (b *KVBudget) fallback(m int64) bool {
	b.Fallbacks.Add(1)
	if b.granted[m] >= b.LocalShare() {
		return false
	}
	b.granted[m]++
	b.prune(m)
	return true
}

// keepMinutes is how many minutes before the latest one asked a budget
// remembers (full minutes, local grants): events a worker holds back or
// that arrive late by more than this are answered as a new minute.
const keepMinutes = 60

// prune forgets minutes older than keepMinutes before m.
func (b *KVBudget) prune(m int64) {
	if len(b.full)+len(b.granted) < 2*keepMinutes {
		return
	}
	for k := range b.full {
		if k < m-keepMinutes {
			delete(b.full, k)
		}
	}
	for k := range b.granted {
		if k < m-keepMinutes {
			delete(b.granted, k)
		}
	}
}

// hasToken reports whether the list v (8 bytes a token) holds token.
func hasToken(v []byte, token uint64) bool {
	for i := 0; i+8 <= len(v); i += 8 {
		if binary.LittleEndian.Uint64(v[i:]) == token {
			return true
		}
	}
	return false
}

// errBusy reports a minute whose key kept changing under this instance.
var errBusy = errors.New("too many revision conflicts")

// take asks the bucket whether token fits in minute m, and returns the
// minute's token list when the minute is full (with token or without). An
// error means the bucket could not be reached, not that the cap refused.
func (b *KVBudget) take(m int64, token uint64) (ok bool, full []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.Timeout)
	defer cancel()
	key := schemas.KVBudgetKey(b.cfg.Name, m)
	var tok [8]byte
	binary.LittleEndian.PutUint64(tok[:], token)
	for range maxConflicts {
		e, err := b.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := b.kv.Create(ctx, key, tok[:]); err == nil {
				return true, b.ifFull(tok[:]), nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return false, nil, err
			}
			b.Conflicts.Add(1)
			continue
		}
		if err != nil {
			return false, nil, err
		}
		v := e.Value()
		if hasToken(v, token) {
			return true, b.ifFull(v), nil // granted before: a redelivery
		}
		if len(v)/8 >= b.cfg.Max {
			return false, v, nil
		}
		next := append(append(make([]byte, 0, len(v)+8), v...), tok[:]...)
		_, err = b.kv.Update(ctx, key, next, e.Revision())
		if err == nil {
			return true, b.ifFull(next), nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil, err
		}
		b.Conflicts.Add(1)
	}
	// Contention, not an outage: refuse this take, keep using the bucket.
	b.log.Warn("cluster budget refused a take after revision conflicts", "key", key, "err", errBusy)
	return false, nil, nil
}

// ifFull returns v, a minute's token list, if it fills the cap, else nil.
func (b *KVBudget) ifFull(v []byte) []byte {
	if len(v)/8 >= b.cfg.Max {
		return v
	}
	return nil
}
