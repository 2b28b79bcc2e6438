// Package enforce is the client side of iotwatch decisions, for enforcement
// points (API gateways' forward-auth services, broker plugins, sidecars).
//
// A Client keeps a local, in-memory copy of the active decisions in the KV
// bucket schemas.KVActiveBlocks: it loads every entry (initial sync), then
// watches the bucket. Each decision's ed25519 signature is verified against
// the trusted public keys before it is applied; unsigned, malformed, tampered
// or unknown-key decisions are rejected and counted. Check answers from the
// local copy without locks or allocations, honouring each decision's
// ExpiresAt whatever the bucket still holds, so enforcement keeps working with
// the last known state while NATS is unreachable.
//
// Scopes: device, api_key and tenant match the request's value exactly; ip
// matches an address exactly or a network given in CIDR notation
// ("10.0.0.0/24", "2001:db8::/32"), and cidr a network. A device, API key or
// tenant value is matched across tenants: the pipeline's KV key is (scope,
// value) only. The MQTT scopes (mqtt_username, mqtt_client_id) are never
// matched by Check: a broker's enforcer applies them (Options.Scopes,
// Options.Deferred). Each enforcement point names the scopes it can match
// (Options.Scopes); a decision of any other scope is held, never enforced,
// and acknowledged once with a not_applicable receipt.
//
// Delivery guarantees. Changes arrive through an ordered consumer that
// resumes after reconnects from the last revision it delivered. If the watch
// itself fails, the Client starts again with a full sync and reconciles it with
// its cache by (KV key, revision, decision id): entries it already holds are
// not applied again, keys that disappeared meanwhile are handled as deletes
// (below), so nothing is missed and nothing is re-applied. With
// Options.StateFile the cache survives restarts on disk and the same
// reconciliation applies after a restart.
//
// Unblocks and expiry. A decision ends in one of two ways:
//
//   - Its ExpiresAt passes (by the Client's clock): it is no longer enforced,
//     whatever the bucket holds. Where the server supports per-key TTLs
//     (nats-server 2.11+, see bus.Ensure) the pipeline writes each decision
//     with its remaining TTL and the server removes it then, leaving a marker
//     that the Client sees as a purge: a purge or delete of a decision that
//     has expired, or expires within a few seconds (server and client clocks
//     differ), is an expiry, counted in Stats.Expired and reported to
//     OnExpire, not an unblock.
//   - A signed unblock lifts it: a Decision with action unblock written under
//     the same KV key, which the Client verifies like any decision. It lifts
//     the enforced decision if schemas.Lifts holds: same scope and value, and
//     it names that decision (its id is schemas.UnblockID of the decision's id)
//     or was created at or after it. A verified unblock that lifts nothing is
//     counted in Stats.UnblocksIgnored and changes nothing.
//
// Revisions. Every decision carries a Revision (schemas.Decision.Revision),
// signed with it, that orders the decisions of one KV key: the publisher that
// signs it (the pipeline, or `iotwatch unblock`) gives it
// schemas.NextRevision of the revision the key holds, under a KV compare and
// swap, so blocks and unblocks from different processes share one increasing
// sequence per key whatever their clocks. The Client remembers the last
// revision it applied per key, also after the decision ends (at least
// Options.RevisionRetention, and while any decision it saw for the key could
// be live; kept in the state file) and rejects a decision with a lower one,
// or the same one on another decision, as stale (Stats.RejectedStale):
// replaying an old signed block after its unblock, or over a newer block,
// changes nothing. Decisions without a revision (signed before revisions)
// are ordered as before, by the bucket and schemas.Lifts.
//
// Trust model. The Client trusts signatures, never the bucket's structure:
// a value is applied only if it verifies and is newer than what it knows for
// the key, and the absence of a value (a delete, a purge, a key missing after
// a resync) lifts nothing. A Client that starts without a state file does not
// take the bucket's word for what was lifted either: before its first sync it
// reads the decision history (every block, throttle and unblock still in
// stream IOTWATCH_DECISIONS, 30 days by default), folds it by the same rules,
// and enforces what is still live (Stats.HistoryRead); the bucket's sync then
// adds what is newer. It needs permission to create an ordered consumer on
// that stream; if the history cannot be read it logs an error, counts
// Stats.HistoryErrors and falls back to the bucket alone.
//
// Threat model. Signatures protect enforcement points against anyone who can
// write to the KV bucket or the decision stream without holding a signing key
// (a compromised gateway, a leaked NATS credential): they can neither block
// (a forged or tampered block is rejected) nor unblock. Without
// AllowUnsigned, an unsigned or tampered unblock is rejected and counted like
// any bad decision, and a bare KV delete or purge of a live decision, or a key
// missing after a resync, lifts nothing: the decision stays enforced until its
// ExpiresAt (or a signed unblock), counted in Stats.IgnoredDeletes and logged.
// Replaying an old signed unblock from the stream's history cannot lift a
// block issued after it (schemas.Lifts), and replaying an old signed block
// is rejected as stale (Revisions). What signatures cannot prevent: deleting
// the decision history and the bucket before an enforcement point first
// learns of a block, and withholding messages (an enforcement point that is cut
// off keeps its last state until each ExpiresAt); protect write access to the
// bucket with NATS permissions for those. With AllowUnsigned (tests and
// demos) a delete of a live decision lifts it, as before signed unblocks.
//
// Receipts. When a decision is taken into the cache (and when a lifted
// decision is removed) the Client calls Options.OnApply and publishes a
// schemas.ApplyReceipt on schemas.SubjectDecisionsApplied, at most once per
// (decision id, enforcer id, action, result): result applied for a scope in
// Options.Scopes, not_applicable (reason schemas.ReceiptReasonScope) for any
// other. With Options.Deferred the Client publishes no receipt for the blocks
// and throttles it can apply: the enforcement point applies them elsewhere
// (a broker) and publishes their outcome with Report. The receipt of an
// unblock carries the lifted decision's id and the key id that signed the
// unblock. With Options.ReceiptKey every receipt is signed by this
// enforcement point's own key, so that the pipeline can tell its receipts
// from forged ones.
package enforce

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// Defaults for Options.
const (
	defaultSweepInterval = time.Second
	// defaultRevisionRetention is Options.RevisionRetention's default.
	defaultRevisionRetention = 30 * 24 * time.Hour
	// historyBatch is how many decisions one fetch of the history takes.
	historyBatch   = 256
	receiptQueue   = 4096
	maxBatch       = 1024
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 5 * time.Second
	publishTimeout = 5 * time.Second
	// markerSkew is how early a TTL marker may arrive, by the Client's
	// clock, and still be an expiry rather than an unexplained delete.
	markerSkew = 5 * time.Second
)

// Options configures a Client.
type Options struct {
	// EnforcerID names this enforcement point in receipts and logs, such as
	// "nginx-edge-1". Required: 1 to 64 of [A-Za-z0-9._-].
	EnforcerID string
	// Keys are the trusted public keys by key id (schemas.LoadPublicKeys).
	// Required unless AllowUnsigned.
	Keys map[string]ed25519.PublicKey
	// AllowUnsigned accepts decisions without a signature (signed ones are
	// still verified). For tests and local demos only.
	AllowUnsigned bool
	// StateFile, when set, is where the cache is saved after every change and
	// loaded from by New, so a restart enforces the last known decisions at
	// once and neither re-applies nor re-acknowledges them.
	StateFile string
	// DisableReceipts turns off publishing receipts (OnApply is still called).
	DisableReceipts bool
	// ReceiptKey, when set, signs every published receipt
	// (schemas.SignReceipt) under the key id EnforcerID: the pipeline stores
	// as verified only receipts signed by a key it trusts for the enforcer id
	// they name (`iotwatch run --enforcer-keys`). Its key file's id must be
	// EnforcerID (`iotwatch enforce keygen --id <enforcer id>`). Without it
	// receipts are unsigned, New logs a warning, and a pipeline with
	// enforcement point keys rejects them.
	ReceiptKey ed25519.PrivateKey
	// Scopes are the decision scopes this enforcement point can match
	// (schemas.Scope*). A decision of another scope is kept in the cache but
	// never enforced (Check ignores it, Active omits it) and acknowledged
	// once with a not_applicable receipt. Empty means what Check matches:
	// device, api_key, ip, cidr and tenant.
	Scopes []string
	// Deferred says that the enforcement point applies the blocks and
	// throttles of Scopes outside the Client (a broker's client list) and
	// reports each outcome with Report: the Client publishes no receipt for
	// them, and passes OnApply their receipt with an empty Result. Receipts of
	// unblocks and of not_applicable decisions are still the Client's.
	Deferred bool
	// OnApply, if set, is called from the watch goroutine with the receipt of
	// every decision taken into the cache (Action block or throttle; Result
	// applied, not_applicable, or empty with Deferred) or lifted (Action
	// unblock), before the receipt is published. It must not block.
	OnApply func(schemas.ApplyReceipt)
	// OnExpire, if set, is called with every decision dropped from the cache
	// because its ExpiresAt passed (found by the sweep every SweepInterval,
	// or replaced by an already expired value, or expired in the state file
	// New loads), from the goroutine that found it. No receipt is sent for
	// an expiry. It must not block. Enforcement points that change state
	// outside the Client (a broker's client list) use it with OnApply to undo
	// what they applied.
	OnExpire func(schemas.Decision)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// SweepInterval is how often expired decisions are dropped from the cache
	// (they are never enforced after ExpiresAt either way); 0 means 1 s.
	SweepInterval time.Duration
	// RevisionRetention is how long the Client remembers the revision of a
	// key's last decision after that decision ended (lifted or expired), so
	// that an older decision replayed into the bucket is rejected as stale:
	// at least this long after the last change, and as long as any decision
	// it saw for the key could still be live. 0 means 30 days (the decision
	// stream's default retention).
	RevisionRetention time.Duration
	// NoHistory skips reading the decision stream's history when the Client
	// starts without a state file (see the package doc): the bucket alone is
	// then trusted for what was lifted. For tests.
	NoHistory bool
	// Log receives operator logs; nil discards them.
	Log *slog.Logger
}

// Stats are the Client's counters since New.
type Stats struct {
	Active           int    // decisions in the cache (some may have just expired)
	Applied          uint64 // decisions applied (receipts with action block/throttle)
	Removed          uint64 // decisions lifted by an unblock
	Expired          uint64 // decisions dropped at or after their ExpiresAt
	IgnoredDeletes   uint64 // KV deletes, purges or missing keys of live decisions, not acted on (signatures required)
	UnblocksIgnored  uint64 // verified unblocks that lift nothing held (another or a newer decision)
	RejectedUnsigned uint64
	RejectedBadSig   uint64 // tampered, or signed by another key under a trusted id
	RejectedUnknown  uint64 // signed by a key id that is not trusted
	RejectedInvalid  uint64 // malformed signature, undecodable JSON, unknown scope/action, key mismatch
	RejectedStale    uint64 // verified decisions older (by Revision) than the last applied for their key: replays
	Resyncs          uint64 // full syncs after the first
	ReceiptsSent     uint64
	ReceiptErrors    uint64 // failed publish attempts (retried)
	ReceiptsDropped  uint64 // receipts dropped because the queue was full or the client stopped
	Revision         uint64 // highest KV revision seen
	HistoryRead      uint64 // decisions read from the decision stream's history at start (no state file)
	HistoryErrors    uint64 // failed attempts to read that history (the bucket alone was used)
}

// Client is a local, verified copy of the active decisions. Check is safe for
// concurrent use at any time, also before Run; Run must be called once.
type Client struct {
	o        Options
	js       jetstream.JetStream // set by Run
	log      *slog.Logger
	tab      atomic.Pointer[table]
	nowNanos func() int64
	synced   chan struct{}
	receipts chan schemas.ApplyReceipt

	// Owned by the Run goroutine.
	entries map[string]*entry
	// revs holds, per KV key, the last decision applied for it (kept after
	// it ends, see Options.RevisionRetention): decisions with an older
	// Revision are stale.
	revs        map[string]keyRev
	dirty       bool
	stateLoaded bool // New found a state file

	scopes map[string]bool // Options.Scopes

	active                                            atomic.Int64
	applied, removed, expired                         atomic.Uint64
	ignoredDeletes, unblocksIgnored                   atomic.Uint64
	rejUnsigned, rejBadSig, rejUnknown, rejInvalid    atomic.Uint64
	rejStale                                          atomic.Uint64
	resyncs, receiptsSent, receiptErrs, receiptsDrops atomic.Uint64
	historyRead, historyErrs                          atomic.Uint64
	revision                                          atomic.Uint64
	running                                           atomic.Bool
}

// New returns a Client with an empty cache, or the cache saved in
// Options.StateFile when it exists: its decisions are verified again and
// enforced at once, before Run connects. An unreadable state file is an error
// (delete it to start empty).
func New(o Options) (*Client, error) {
	if !schemas.ValidKeyID(o.EnforcerID) {
		return nil, fmt.Errorf("cannot create enforcement client: invalid enforcer id %q (want 1-64 of [A-Za-z0-9._-])", o.EnforcerID)
	}
	if len(o.Keys) == 0 && !o.AllowUnsigned {
		return nil, fmt.Errorf("cannot create enforcement client %q: no trusted public keys", o.EnforcerID)
	}
	if o.ReceiptKey != nil && len(o.ReceiptKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("cannot create enforcement client %q: receipt key has %d bytes, want %d", o.EnforcerID, len(o.ReceiptKey), ed25519.PrivateKeySize)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.RevisionRetention <= 0 {
		o.RevisionRetention = defaultRevisionRetention
	}
	scopes := map[string]bool{}
	if len(o.Scopes) == 0 {
		o.Scopes = CheckScopes()
	}
	for _, sc := range o.Scopes {
		if !schemas.ValidScope(sc) {
			return nil, fmt.Errorf("cannot create enforcement client %q: unknown scope %q (want one of %s)", o.EnforcerID, sc, strings.Join(schemas.Scopes(), ", "))
		}
		scopes[sc] = true
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.ReceiptKey == nil && !o.DisableReceipts {
		log.Warn("receipts are not signed: a pipeline that verifies receipts rejects them; give this enforcement point a receipt key",
			"enforcer", o.EnforcerID, "subject", schemas.SubjectDecisionsApplied)
	}
	c := &Client{
		o: o, log: log.With("enforcer", o.EnforcerID),
		synced:   make(chan struct{}),
		receipts: make(chan schemas.ApplyReceipt, receiptQueue),
		entries:  map[string]*entry{},
		revs:     map[string]keyRev{},
		scopes:   scopes,
	}
	now := o.Now
	c.nowNanos = func() int64 { return now().UnixNano() }
	if o.StateFile != "" {
		if err := c.loadState(); err != nil {
			return nil, err
		}
	}
	c.publish()
	return c, nil
}

// CheckScopes returns the scopes Check matches, the default of
// Options.Scopes: device, api_key, ip, cidr and tenant.
func CheckScopes() []string {
	return []string{schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeIP, schemas.ScopeCIDR, schemas.ScopeTenant}
}

// Applies reports whether the client's enforcement point can match scope
// (Options.Scopes).
func (c *Client) Applies(scope string) bool { return c.scopes[scope] }

// Check returns the verdict for r from the local cache: the first live block
// matching r's device, API key, IP (exact, then networks longest first) or
// tenant, else the first live throttle, else allow; decisions of scopes
// outside Options.Scopes never match. It never blocks and does not allocate.
func (c *Client) Check(r Request) Verdict {
	return c.tab.Load().check(&r, c.nowNanos)
}

// Synced is closed once the first full sync with the KV bucket is done.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{
		Active:  int(c.active.Load()),
		Applied: c.applied.Load(), Removed: c.removed.Load(), Expired: c.expired.Load(),
		IgnoredDeletes: c.ignoredDeletes.Load(), UnblocksIgnored: c.unblocksIgnored.Load(),
		RejectedUnsigned: c.rejUnsigned.Load(), RejectedBadSig: c.rejBadSig.Load(),
		RejectedUnknown: c.rejUnknown.Load(), RejectedInvalid: c.rejInvalid.Load(),
		RejectedStale: c.rejStale.Load(),
		Resyncs:       c.resyncs.Load(), ReceiptsSent: c.receiptsSent.Load(),
		ReceiptErrors: c.receiptErrs.Load(), ReceiptsDropped: c.receiptsDrops.Load(),
		Revision:    c.revision.Load(),
		HistoryRead: c.historyRead.Load(), HistoryErrors: c.historyErrs.Load(),
	}
}

// Run syncs with the KV bucket through js, then applies its changes until ctx
// is done, and returns nil then. A missing bucket, a lost connection or a failed watch
// is retried with back-off (100 ms doubling to 5 s) and followed by a full
// sync; Check keeps answering from the cache meanwhile. Run must be called
// once.
func (c *Client) Run(ctx context.Context, js jetstream.JetStream) error {
	if !c.running.CompareAndSwap(false, true) {
		return fmt.Errorf("cannot run enforcement client %q: already running", c.o.EnforcerID)
	}
	c.js = js
	var wg sync.WaitGroup
	if !c.o.DisableReceipts {
		wg.Go(func() { c.publishReceipts(ctx) })
	}
	defer wg.Wait()
	sweep := time.NewTicker(c.o.SweepInterval)
	defer sweep.Stop()
	for attempt, first := 0, true; ; attempt++ {
		err := c.session(ctx, sweep.C, first)
		if ctx.Err() != nil {
			return nil
		}
		first = false
		wait := backoff(0)
		if err != nil {
			c.log.Warn("enforcement watch failed, retrying", "err", err, "attempt", attempt+1)
			wait = backoff(attempt)
		} else {
			attempt = -1 // the session had synced: the next failure starts the back-off afresh
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// errWatchClosed ends a session whose watcher stopped delivering.
var errWatchClosed = errors.New("KV watcher closed")

// session runs one watch: a full sync, then updates. It returns a non-nil
// error if it failed before the sync completed.
func (c *Client) session(ctx context.Context, sweep <-chan time.Time, first bool) error {
	kv, err := c.js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		return fmt.Errorf("cannot open KV bucket %q: %w", schemas.KVActiveBlocks, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("cannot watch KV bucket %q: %w", schemas.KVActiveBlocks, err)
	}
	defer func() { _ = w.Stop() }()
	if first && !c.stateLoaded && !c.o.NoHistory {
		// Without a state file the bucket alone would say what is lifted,
		// and anyone who can delete a key could lift a block: rebuild from
		// the signed history first (package doc, "Trust model").
		if err := c.readHistory(ctx); err != nil {
			c.historyErrs.Add(1)
			c.log.Error("cannot read the decision history: the bucket alone says what is active", "stream", schemas.StreamDecisions, "err", err)
		}
	}
	// A reconnect ends the session: the ordered consumer would notice a lost
	// consumer only after missed heartbeats, a full sync is immediate.
	var reconnected <-chan nats.Status
	if nc := c.js.Conn(); nc != nil {
		ch := nc.StatusChanged(nats.CONNECTED)
		defer nc.RemoveStatusListener(ch)
		reconnected = ch
	}

	// Initial values, up to the nil marker.
	seen := map[string]bool{}
	for synced := false; !synced; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sweep:
		case kve, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("cannot sync KV bucket %q: %w", schemas.KVActiveBlocks, errWatchClosed)
			}
			if kve == nil {
				synced = true
				break
			}
			seen[kve.Key()] = true
			c.apply(kve)
		}
	}
	for key, e := range c.entries {
		if !seen[key] {
			c.dropped(key, e, "missing after sync")
		}
	}
	c.sweep()
	c.publish()
	if !first {
		c.resyncs.Add(1)
	}
	select {
	case <-c.synced:
	default:
		close(c.synced)
	}
	c.log.Info("enforcement cache synced", "active", len(c.entries), "revision", c.revision.Load())

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnected:
			c.log.Info("enforcement watch resyncing after reconnect")
			return nil
		case <-sweep:
			c.sweep()
			c.publish()
		case kve, ok := <-w.Updates():
			if !ok {
				c.log.Warn("enforcement watch closed", "err", errWatchClosed)
				return nil
			}
			if kve != nil {
				c.apply(kve)
			}
			// Apply whatever else is already queued before publishing a table.
			closed := false
		drain:
			for range maxBatch {
				select {
				case more, ok := <-w.Updates():
					if !ok {
						closed = true
						break drain
					}
					if more != nil {
						c.apply(more)
					}
				default:
					break drain
				}
			}
			c.publish()
			if closed {
				c.log.Warn("enforcement watch closed", "err", errWatchClosed)
				return nil
			}
		}
	}
}

// apply folds one KV entry into the cache.
func (c *Client) apply(kve jetstream.KeyValueEntry) {
	key, rev := kve.Key(), kve.Revision()
	if rev > c.revision.Load() {
		c.revision.Store(rev)
	}
	old := c.entries[key]
	if op := kve.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
		if old != nil && rev > old.revision {
			c.dropped(key, old, "KV "+op.String())
		}
		return
	}
	if old != nil && rev <= old.revision {
		return // already applied: a resync or a redelivery
	}
	e, err := c.decode(key, rev, kve.Value())
	if err != nil {
		c.log.Warn("enforcement decision rejected", "key", key, "revision", rev, "err", err)
		return // a rejected write changes nothing: an older valid decision stays
	}
	if last, stale := c.stale(key, &e.d); stale {
		c.rejStale.Add(1)
		c.log.Warn("enforcement decision rejected: older than the last applied for its key (a replay)",
			"decision", e.d.ID, "action", e.d.Action, "key", key, "decision_revision", e.d.Revision, "last_revision", last.rev, "last_decision", last.id)
		return
	}
	if e.d.Action == schemas.ActionUnblock {
		switch {
		case old == nil:
			// Nothing held: the unblock of a decision already gone here.
			c.record(key, &e.d, 0)
		case schemas.Lifts(&e.d, &old.d):
			c.record(key, &e.d, old.expires)
			c.remove(key, old, "unblock "+e.d.ID, schemas.SignatureKeyID(&e.d))
		default:
			c.unblocksIgnored.Add(1)
			c.log.Warn("enforcement unblock ignored: it does not lift the enforced decision", "unblock", e.d.ID, "decision", old.d.ID, "key", key)
		}
		return
	}
	c.record(key, &e.d, e.expires)
	if !e.live(c.nowNanos()) {
		if old != nil {
			c.drop(key, old)
		} else {
			c.expired.Add(1)
		}
		return
	}
	c.entries[key] = e
	c.dirty = true
	if old != nil && old.d.ID == e.d.ID {
		return // the same decision written again: nothing new to enforce
	}
	c.applied.Add(1)
	c.receipt(&e.d, e.d.Action, schemas.SignatureKeyID(&e.d))
}

// dropped handles a live decision's key deleted, purged (a TTL marker among
// them) or missing after a sync: an expiry if its ExpiresAt has passed; else
// a lift with AllowUnsigned; else nothing, since nobody signed it (see the
// threat model in the package doc). The decision then stays until its
// ExpiresAt or a signed unblock.
func (c *Client) dropped(key string, e *entry, why string) {
	now := c.nowNanos()
	switch {
	case !e.live(now):
		c.drop(key, e)
		return
	case c.o.AllowUnsigned:
		c.remove(key, e, why, schemas.SignatureKeyID(&e.d))
		return
	case e.orphan:
		return // already counted
	}
	ne := *e // entries are shared with the published table: copy, never mutate
	ne.orphan = true
	c.entries[key] = &ne
	c.dirty = true
	if e.expires != 0 && e.expires-now <= int64(markerSkew) {
		return // a TTL marker a little early by our clock: ExpiresAt ends it
	}
	c.ignoredDeletes.Add(1)
	c.log.Warn("enforcement decision kept: its KV entry was removed without a signed unblock",
		"decision", e.d.ID, "scope", e.d.Scope, "value", e.d.Value, "why", why, "expires_at", e.d.ExpiresAt)
}

// decode parses and verifies one KV value (a block, throttle or unblock) and
// counts a rejection.
func (c *Client) decode(key string, rev uint64, raw []byte) (*entry, error) {
	e, counter, err := c.parse(key, rev, raw)
	if err != nil {
		counter.Add(1)
		return nil, err
	}
	return e, nil
}

// parse parses and verifies one KV value; on error it also returns the
// counter of that kind of rejection.
func (c *Client) parse(key string, rev uint64, raw []byte) (*entry, *atomic.Uint64, error) {
	e := &entry{key: key, revision: rev, raw: raw}
	if err := json.Unmarshal(raw, &e.d); err != nil {
		return nil, &c.rejInvalid, fmt.Errorf("cannot decode decision: %w", err)
	}
	d := &e.d
	switch {
	case d.DryRun:
		return nil, &c.rejInvalid, fmt.Errorf("cannot enforce decision %q: a dry run", d.ID)
	case d.Action != schemas.ActionBlock && d.Action != schemas.ActionThrottle && d.Action != schemas.ActionUnblock:
		return nil, &c.rejInvalid, fmt.Errorf("cannot enforce decision %q: action %q is not block, throttle or unblock", d.ID, d.Action)
	}
	switch d.Scope {
	case schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeTenant, schemas.ScopeMQTTUsername, schemas.ScopeMQTTClientID:
	case schemas.ScopeIP, schemas.ScopeCIDR:
		p, isPrefix, ok := parseIPValue(d.Value)
		if !ok || (d.Scope == schemas.ScopeCIDR && !strings.Contains(d.Value, "/")) {
			return nil, &c.rejInvalid, fmt.Errorf("cannot enforce decision %q: %s value %q is not an address or CIDR", d.ID, d.Scope, d.Value)
		}
		e.prefix, e.isPrefix = p, isPrefix
	default:
		return nil, &c.rejInvalid, fmt.Errorf("cannot enforce decision %q: unknown scope %q", d.ID, d.Scope)
	}
	if d.Value == "" || schemas.KVKey(d.Scope, d.Value) != key {
		return nil, &c.rejInvalid, fmt.Errorf("cannot enforce decision %q: %s=%q does not belong under key %q", d.ID, d.Scope, d.Value, key)
	}
	if counter, err := c.verify(d); err != nil {
		return nil, counter, err
	}
	if !d.ExpiresAt.IsZero() {
		e.expires = d.ExpiresAt.UnixNano()
	}
	return e, nil, nil
}

// verify checks d's signature and returns the counter of its rejection.
func (c *Client) verify(d *schemas.Decision) (*atomic.Uint64, error) {
	if d.Signature == "" && c.o.AllowUnsigned {
		return nil, nil
	}
	err := schemas.VerifyDecision(d, c.o.Keys)
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, schemas.ErrUnsigned):
		return &c.rejUnsigned, err
	case errors.Is(err, schemas.ErrUnknownKey):
		return &c.rejUnknown, err
	case errors.Is(err, schemas.ErrBadSignature):
		return &c.rejBadSig, err
	}
	return &c.rejInvalid, err
}

// remove drops a lifted decision and acknowledges the unblock, signed by keyID.
func (c *Client) remove(key string, e *entry, why, keyID string) {
	delete(c.entries, key)
	c.dirty = true
	c.removed.Add(1)
	c.log.Info("enforcement decision lifted", "decision", e.d.ID, "scope", e.d.Scope, "value", e.d.Value, "why", why)
	c.receipt(&e.d, schemas.ActionUnblock, keyID)
}

// sweep drops expired decisions (no receipt: they simply ended) and the
// revisions of keys past their retention.
func (c *Client) sweep() {
	now := c.nowNanos()
	for key, e := range c.entries {
		if !e.live(now) {
			c.drop(key, e)
		}
	}
	for key, r := range c.revs {
		if now > r.until && c.entries[key] == nil {
			delete(c.revs, key)
			c.dirty = true
		}
	}
}

// drop removes the expired entry e held under key and reports its expiry.
func (c *Client) drop(key string, e *entry) {
	delete(c.entries, key)
	c.dirty = true
	c.expired.Add(1)
	c.expire(&e.d)
}

// expire calls Options.OnExpire, if set.
func (c *Client) expire(d *schemas.Decision) {
	if c.o.OnExpire != nil {
		c.o.OnExpire(*d)
	}
}

// Active returns the decisions the cache enforces at the clock's now (one
// per scope and value: of two KV keys naming the same IP, the stronger), in
// no particular order: those of Options.Scopes only. It is safe for concurrent use, also before Run. It
// reads the same snapshot as Check, published after each batch of changes:
// while OnApply runs, the change it reports may not be visible yet.
func (c *Client) Active() []schemas.Decision {
	t := c.tab.Load()
	now := c.nowNanos()
	out := make([]schemas.Decision, 0, t.n)
	add := func(e *entry) {
		if e.live(now) {
			out = append(out, e.d)
		}
	}
	for _, e := range t.device {
		add(e)
	}
	for _, e := range t.apiKey {
		add(e)
	}
	for _, e := range t.tenant {
		add(e)
	}
	for _, e := range t.ip {
		add(e)
	}
	for _, e := range t.cidr {
		add(e)
	}
	for _, e := range t.other {
		add(e)
	}
	return out
}

// publish makes the cache visible to Check and saves it, if it changed.
func (c *Client) publish() {
	if !c.dirty && c.tab.Load() != nil {
		return
	}
	c.tab.Store(newTable(c.entries, c.scopes))
	c.active.Store(int64(len(c.entries)))
	if c.dirty && c.o.StateFile != "" {
		if err := c.saveState(); err != nil {
			c.log.Error("cannot save enforcement state", "path", c.o.StateFile, "err", err)
		}
	}
	c.dirty = false
}

// receipt calls OnApply and queues the receipt for publishing: action on d,
// authorised by a decision signed with keyID. Its result is applied for a
// scope of Options.Scopes (none with Deferred, for a block or throttle: the
// enforcement point reports it), else not_applicable.
func (c *Client) receipt(d *schemas.Decision, action, keyID string) {
	r := schemas.ApplyReceipt{
		DecisionID: d.ID, EnforcerID: c.o.EnforcerID, Action: action,
		Scope: d.Scope, Value: d.Value, KeyID: keyID,
		AppliedAt: c.o.Now().UTC(), Result: schemas.ReceiptApplied, SchemaV: schemas.SchemaVersion,
	}
	switch {
	case !c.scopes[d.Scope]:
		r.Result, r.Reason = schemas.ReceiptNotApplicable, schemas.ReceiptReasonScope
		r.Detail = "this enforcement point cannot match scope " + d.Scope
	case c.o.Deferred && action != schemas.ActionUnblock:
		r.Result = "" // the enforcement point reports it (Report)
	}
	if c.o.OnApply != nil {
		c.o.OnApply(r)
	}
	if r.Result == "" {
		return
	}
	c.Report(r)
}

// Report queues r for publishing on schemas.SubjectDecisionsApplied (unless
// Options.DisableReceipts), retrying until it is stored or Run ends; with
// Options.Deferred the enforcement point reports the outcome of each block or
// throttle through it. It does not block: beyond a full queue the receipt is
// dropped and counted. r.EnforcerID, AppliedAt and SchemaV are filled in when
// empty. Safe for concurrent use.
func (c *Client) Report(r schemas.ApplyReceipt) {
	if c.o.DisableReceipts {
		return
	}
	if r.EnforcerID == "" {
		r.EnforcerID = c.o.EnforcerID
	}
	if r.AppliedAt.IsZero() {
		r.AppliedAt = c.o.Now().UTC()
	}
	if r.SchemaV == 0 {
		r.SchemaV = schemas.SchemaVersion
	}
	select {
	case c.receipts <- r:
	default:
		c.receiptsDrops.Add(1)
		c.log.Warn("enforcement receipt dropped, queue full", "decision", r.DecisionID, "action", r.Action)
	}
}

// publishReceipts publishes queued receipts in order, retrying each until it
// is stored or ctx is done. Retries carry the same Nats-Msg-Id.
func (c *Client) publishReceipts(ctx context.Context) {
	for {
		var r schemas.ApplyReceipt
		select {
		case <-ctx.Done():
			c.receiptsDrops.Add(uint64(len(c.receipts)))
			return
		case r = <-c.receipts:
		}
		if c.o.ReceiptKey != nil {
			if err := schemas.SignReceipt(&r, c.o.EnforcerID, c.o.ReceiptKey); err != nil {
				// Report was given another enforcer's receipt: never sent.
				c.receiptsDrops.Add(1)
				c.log.Warn("enforcement receipt dropped, cannot sign it", "decision", r.DecisionID, "err", err)
				continue
			}
		}
		data, err := json.Marshal(&r)
		if err != nil {
			panic(fmt.Sprintf("BUG: cannot encode receipt: %v", err))
		}
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, publishTimeout)
			_, err := c.js.Publish(pctx, schemas.SubjectDecisionsApplied, data, jetstream.WithMsgID(schemas.ReceiptMsgID(&r)))
			cancel()
			if err == nil {
				c.receiptsSent.Add(1)
				break
			}
			c.receiptErrs.Add(1)
			if ctx.Err() != nil {
				c.receiptsDrops.Add(1 + uint64(len(c.receipts)))
				return
			}
			if attempt == 0 || attempt%20 == 0 {
				c.log.Warn("cannot publish enforcement receipt, retrying", "decision", r.DecisionID, "subject", schemas.SubjectDecisionsApplied, "attempt", attempt+1, "err", err)
			}
			t := time.NewTimer(backoff(attempt))
			select {
			case <-ctx.Done():
				t.Stop()
				c.receiptsDrops.Add(1 + uint64(len(c.receipts)))
				return
			case <-t.C:
			}
		}
	}
}

// backoff returns the wait before retry n (0-based): 100 ms doubling to 5 s,
// with up to 50% jitter.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 6 {
		d = min(minBackoff<<n, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}
