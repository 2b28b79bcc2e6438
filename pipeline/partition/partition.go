// Package partition gives a scorer the event partitions it owns: one owner
// per partition at any time, decided by the NATS server, never by iotwatch.
//
// Each partition p has its own durable consumer on IOTWATCH_EVENTS
// (bus.EnsurePartitions: schemas.ScorerConsumer(p), filtered to
// iotwatch.events.<p> and iotwatch.obs.<p>, its entities' observations) with the pinned-client priority policy. Every scorer
// instance pulls from every partition's consumer in group
// schemas.ScorerGroup; the server delivers a partition's messages to one
// client only, the pinned one, identified by the pin id that every message
// carries (header Nats-Pin-Id) and that the client sends back with each
// pull. Other instances' pulls wait. So:
//
//   - An instance owns partition p from the first message it gets under a
//     new pin id (Owner.Acquired) until a pull is refused with "pin id
//     mismatch" or the consumer's info names another pin (Owner.Lost).
//   - A pinned instance that sends no pull for PinnedTTL (dead, or cut off)
//     is unpinned by the server, and the next waiting pull of another instance
//     is pinned: a crash moves its partitions within PinnedTTL plus one pull
//     expiry (PinnedTTL/3). Its delivered but unacked messages are redelivered
//     to the new owner after the consumer's AckWait, in stream order.
//   - A pinned instance that is alive but busy (a slow sink back-pressuring
//     the pipeline) keeps its pins: while it cannot hand a message on, it
//     sends keep-alive pulls that can deliver nothing (max bytes 1), which
//     reset the server's PinnedTTL timer.
//
// Fencing a stalled owner. An instance that stalls (a GC pause, a loaded
// machine, SIGSTOP, a network cut) for PinnedTTL is unpinned by the server
// while it still holds p's messages, and another instance is pinned. So
// that the stalled one never goes on judging p, each pin carries a local
// lease: it runs PinnedTTL minus Config.LeaseMargin from the moment the last
// pull under that pin was sent that the server answered (a message
// delivered, or a status before the client's own timeout), and a pull
// renews it only if sent while the lease ran (else the server may have
// unpinned it before the pull arrived). The server resets its PinnedTTL
// timer when it receives such a pull, no earlier than it was sent, so
// while the lease runs the server has pinned no other instance, provided a
// pull reaches the server within LeaseMargin of being sent. An idle
// partition's lease is renewed by the answers to its pulls (408 at their
// expiry, PinnedTTL/3), a busy pipeline's by keep-alive pulls of short
// expiry. (Keep-alives sent alongside waiting pulls to renew idle leases
// sooner were tried: a scorer then stopped receiving messages of
// partitions it owned, with valid leases; the cause was not found.) The
// instance:
//
//   - hands a message of p on (to Fetch's merge), and Fetch returns it,
//     only while the lease of the pin it was delivered under runs;
//   - acks it only while that lease runs: a message Fetch returned whose
//     ack comes later is given back (nak) instead and its Ack returns
//     ErrFenced, for the new owner to score (the pipeline had already
//     written its results: see below);
//   - once the lease ended, counts p lost (Owner.Lost), gives back the
//     messages of p it holds, gives back or refuses everything still
//     delivered under that pin, and unpins it if the server still names
//     it: p is this instance's again only under a new pin (Owner.Acquired,
//     with a restore). A nak is skipped for a message whose ack wait may
//     have passed (the server redelivered it already: a nak of the old
//     delivery would deliver it once more).
//
// Lost and Acquired of one partition are serialised with the ownership
// change they report: never concurrent, and in the order of the changes.
//
// What can still happen, and its bound: a message this instance handed on
// within the lease is judged by it even if the stall falls between the
// hand-on and the judging (a worker that took it before stalling): its
// results (rows, alerts, decisions) are written, its ack is refused, and
// the new owner judges it again. Such events are at most those in the
// pipeline between Fetch and ack when the stall began (per partition, at
// most the unacked messages of p; in the pipeline, its batches in flight).
// Rows carry deterministic ids and are ReplacingMergeTree by id: the
// second write replaces the first (FINAL and distinct ids show one row;
// raw counts show both until a merge). An alert or decision judged the same
// way twice has the same id (published twice, stored once); one judged
// differently (the new owner restored an older state) stays as the first
// owner published it. Nothing fences what the stalled instance had already
// written to ClickHouse or NATS before it learned of its loss. The lease
// rests on one assumption: a pull reaches the server within LeaseMargin of
// the time it is recorded as sent (a process stalled between the two longer
// than that, with no other pull of p in between, breaks it), and on the
// ack wait being longer than PinnedTTL (else the server redelivers held
// messages while the lease still runs, fenced or not).
//
// Balance: a pinned client would keep every partition it ever got. Each
// instance keeps a presence key in KV bucket schemas.KVScorers whose value
// is the number of partitions it owns (rewritten every Rebalance interval,
// expiring after two PinnedTTLs, deleted at Stop); the number of keys is the
// number of instances N, and a fair share of P partitions is floor(P/N) or
// ceil(P/N) each. (The consumers' NumWaiting, one waiting pull per
// instance, was tried first: an owner's pull sent ahead and its keep-alives
// count twice, and an estimate too high made two instances pass partitions
// back and forth.) Every Rebalance interval each instance reads the
// partitions' consumer info and the keys, and:
//
//   - gives up what it owns beyond ceil, or one partition when it owns more
//     than floor and another instance owns two fewer than it (6, 6, 4 of 16
//     partitions is not fair although none owns more than ceil): for each,
//     it stops pulling the partition, waits until none of its messages is
//     unacked (the server's NumAckPending, polled by the partition's puller:
//     what it handed on is scored and durable), stops counting it as its own
//     (Owner.Lost), unpins it (the server's unpin API) and sits it out for
//     two PinnedTTLs, so that another instance's waiting pull is pinned. The
//     one-writer rule thus holds through a release as well. A partition with
//     no unacked message is given up first; one whose acks do not come
//     within the consumer's AckWait (a crashed previous owner's messages,
//     redelivered only to a pull) is pulled again and kept for an AckWait.
//
//   - keeps waiting pulls on the partitions it does not own only while it is
//     short of its share (fewer than floor, or fewer than ceil when no other
//     instance has fewer than floor): a released partition goes to an
//     instance short of its share, never to one that has it. An instance
//     with its share reads, every pull expiry, the info of each partition it
//     does not own, and pulls one that has messages pending and no pinned
//     client (an orphan: after a crash, while the crashed instance's key
//     still counts, every survivor may have its share).
//
//   - at the start, while no instance owns a partition (every presence
//     key's count is 0), pulls only the partitions it prefers: those whose
//     number modulo N is its rank among the instances' names. Instances
//     that see each other before the first message thus start with floor
//     or ceil each, with no release (each checks once before its first
//     pull; one that started alone learns of the others at its next check,
//     and its pulls sent before expire within a third of the PinnedTTL).
//     Before, the first instance to pull took every partition and gave
//     them on one Rebalance interval at a time, each once its messages
//     were acked. A preferred partition whose instance died before
//     pulling waits for its presence key to expire (two PinnedTTLs).
//
// So N instances reach a fair share within a few Rebalance intervals (the
// server may pin every released partition to one waiting instance, which
// then gives its excess on: TestShareConverges bounds the rounds), and an
// instance that joins gets its first partition about one Rebalance interval
// after it starts (the others' next check) plus the time the giver's
// pipeline takes to ack what it was handed of the partition.
//
// Static assignment (Config.Only): an instance told which partitions to pull
// owns those only, and releases none for balance; ownership, the lease and
// the fence work as above.
package partition

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/iotwatch/iotwatch/schemas"
)

// Owner is told when this instance gains or loses a partition: the hook for
// per-partition state (restore a partition's checkpoint on Acquired, drop its
// devices' state on Lost).
//
// Calls for one partition come from that partition's goroutine (or the
// rebalancer, for a release or a fence), never two at once for the same
// partition and always in the order of the ownership changes they report;
// calls for different partitions may be concurrent. Acquired(p, firstSeq) is
// called before the message of stream sequence firstSeq, the first this
// instance gets under its new pin, is handed on: it may block (a restore),
// and the partition's messages wait. Lost(p) is called once the instance
// learns it lost p (refused pull, another pin in the consumer's info, or
// its own release, or its lease on the pin ended: the fence in the package
// doc); messages of p handed on before may still be in the pipeline: after
// a crash-free release none are unacked, after a pin lost to the PinnedTTL
// (this instance stalled that long) some may be, and their acks will be
// refused (ErrFenced).
type Owner interface {
	Acquired(p int, firstSeq uint64)
	Lost(p int)
}

// LogOwner is the default Owner: it logs the changes and keeps no state
// (one machine scores every partition with the same workers).
type LogOwner struct{ Log *slog.Logger }

// Acquired logs the partition and the first stream sequence.
func (o LogOwner) Acquired(p int, firstSeq uint64) {
	o.Log.Info("partition acquired", "partition", p, "first_seq", firstSeq)
}

// Lost logs the partition.
func (o LogOwner) Lost(p int) { o.Log.Info("partition lost", "partition", p) }

// PinIDHeader is the header in which the server names the pin a message
// was delivered under (nats-server's JSPullRequestNatsPinId).
const PinIDHeader = "Nats-Pin-Id"

// Config configures a Consumer.
type Config struct {
	// PinnedTTL is the partition consumers' PinnedTTL (bus.EnsurePartitions);
	// pulls expire after PinnedTTL/3, and so do keep-alives. Default
	// bus.DefaultPinnedTTL's 5 s.
	PinnedTTL time.Duration
	// PullBatch is the most messages one pull of one partition asks for
	// (default 256).
	PullBatch int
	// FetchWait is how long Fetch waits for its first message (default
	// 100 ms, as the pipeline's FetchWait).
	FetchWait time.Duration
	// Rebalance is how often lag, ownership and balance are checked and
	// the presence key rewritten (default and at most PinnedTTL; run's
	// --rebalance): a newcomer waits about this long for its first
	// partition; each check reads every partition consumer's info. < 0 never
	// releases and always pulls every partition (checked every PinnedTTL).
	Rebalance time.Duration
	// Owner hears of acquired and lost partitions (default LogOwner).
	Owner Owner
	// Presence is the bucket of scorers' presence keys (bus.EnsurePartitions)
	// from which the instance count for balance is read; nil: no release for
	// balance.
	Presence jetstream.KeyValue
	// Instance names this instance's presence key (default a unique id).
	Instance string
	// LeaseMargin is how much earlier than the server this instance
	// considers a partition's pin ended (the fence, see the package doc):
	// it bounds a pull's transit to the server and clock-rate differences.
	// Default PinnedTTL/5.
	LeaseMargin time.Duration
	// Only lists the partitions this instance pulls (nil: every one): a
	// static assignment, with no release for balance. An instance still
	// owns a partition only while the server pins it, and is fenced as
	// usual; a partition no instance lists is not read. For deployments
	// that assign partitions themselves, and for tests whose assertions
	// need ownership to stay put.
	Only []int
	// Log is for operators (default slog.Default()).
	Log *slog.Logger
}

// Consumer merges the partitions this instance owns into one stream of
// messages for the pipeline (Fetch) and reports what it owns. Create with
// New; it runs until Stop.
type Consumer struct {
	cfg    Config
	stream jetstream.Stream
	cons   []jetstream.Consumer
	// notify wakes Fetch when a puller handed a message on.
	notify chan struct{}
	// heads[p] is partition p's next message taken from its channel and not
	// fetched yet (Fetch's, like headSeq).
	heads   []jetstream.Msg
	headSeq []uint64
	parts   []part
	owned   atomic.Int64
	acq     atomic.Uint64
	// keptBack counts messages a keep-alive pull received (and nakked).
	keptBack atomic.Uint64
	lost     atomic.Uint64
	// fenced counts messages given back (nak) instead of being handed on
	// or acked because their pin's lease had ended; fences, the partitions
	// lost that way.
	fenced atomic.Uint64
	fences atomic.Uint64
	// refused counts the acks among fenced: messages the pipeline had
	// scored when their partition's lease had ended.
	refused atomic.Uint64
	// present holds the instances whose presence keys the last balance
	// check read (Awaited).
	present atomic.Pointer[map[string]bool]
	// headPin[p] is the pin id heads[p] was delivered under (Fetch's).
	headPin []string
	// ackWait[p] is partition p's consumer's AckWait (0: unknown).
	ackWait []time.Duration
	// gate is held by a test to stall this instance as a stopped process
	// would: no pull, keep-alive, hand-on or Fetch while it is.
	gate sync.RWMutex
	// noFence turns the fence off (a test's "before").
	noFence atomic.Bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	// stopping: Stop was called (messages pulled and not handed on are
	// nakked); a cancelled ctx alone leaves them to the ack wait.
	stopping atomic.Bool
	// quiescing: Quiesce was called: no new pull; what was pulled is
	// handed on. handedOn counts the messages put in a partition's ch,
	// released those Fetch returned or gave back: equal, none is held.
	quiescing atomic.Bool
	handedOn  atomic.Uint64
	released  atomic.Uint64
	// share is the fair share as the last rebalance check saw it (nil:
	// not known, or no balance).
	share atomic.Pointer[share]
}

// part is one partition's ownership, guarded by its mu.
type part struct {
	// hook serialises ownership changes with their Owner calls: taken
	// before mu, never by Fetch.
	hook sync.Mutex
	mu   sync.Mutex
	// pin is the pin id this instance holds, "" when it does not own it.
	pin string
	// lease is when the last pull under pin that the server answered was
	// sent (UnixNano): the server reset its PinnedTTL timer no earlier.
	lease int64
	// dead is the last pin this instance fenced itself off: messages still
	// delivered under it are given back, never handed on.
	dead string
	// releasing: the rebalancer is giving it up; the puller stops pulling.
	// releaseFrom is when it started to; keepUntil, after a release given
	// up, when the rebalancer may choose it again.
	releasing   bool
	releaseFrom time.Time
	keepUntil   time.Time
	// until: after a release, no pull before then.
	until   time.Time
	pending atomic.Uint64
	waiting atomic.Int64
	// ackPending is the consumer's NumAckPending at the last check;
	// orphan, whether that check found messages pending and no client
	// pinned (mayPull).
	ackPending atomic.Uint64
	orphan     atomic.Bool
	// ch holds messages handed on and not fetched yet (at most PullBatch).
	ch chan jetstream.Msg
	// last is the stream sequence of the last message pulled, and backlog
	// whether the consumer had more pending then: while it has, a message
	// of another partition after last waits (Fetch's merge).
	last    atomic.Uint64
	backlog atomic.Bool
	// pulled is when the last pull or keep-alive of p was sent (UnixNano).
	pulled atomic.Int64
	// probing: a keep-alive pull of p is waiting for its answer.
	probing atomic.Bool
	// firstRedelivered: the message p's current pin began with had been
	// delivered before (FirstRedelivered).
	firstRedelivered atomic.Bool
	// quiet: after Quiesce, p's puller has handed on all it pulled and
	// sends no more pulls.
	quiet atomic.Bool
}

func (pt *part) lastPull() time.Time { return time.Unix(0, pt.pulled.Load()) }

// New starts pulling every partition of cons (by partition, from
// bus.EnsurePartitions) on stream (IOTWATCH_EVENTS) until Stop or ctx's end.
// A ctx that ends without Stop is a crash as the others see it: no nak, no
// unpin; the partitions move after PinnedTTL and the unacked messages after
// the ack wait.
func New(ctx context.Context, stream jetstream.Stream, cons []jetstream.Consumer, cfg Config) (*Consumer, error) {
	if len(cons) == 0 {
		return nil, errors.New("cannot own partitions: no partition consumer")
	}
	if cfg.PinnedTTL <= 0 {
		cfg.PinnedTTL = 5 * time.Second
	}
	if cfg.PullBatch <= 0 {
		cfg.PullBatch = 256
	}
	if cfg.FetchWait <= 0 {
		cfg.FetchWait = 100 * time.Millisecond
	}
	if cfg.Rebalance == 0 || cfg.Rebalance > cfg.PinnedTTL {
		cfg.Rebalance = cfg.PinnedTTL // the presence key expires after two
	}
	if cfg.LeaseMargin <= 0 || cfg.LeaseMargin >= cfg.PinnedTTL {
		cfg.LeaseMargin = cfg.PinnedTTL / 5
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Owner == nil {
		cfg.Owner = LogOwner{Log: cfg.Log}
	}
	if cfg.Instance == "" {
		cfg.Instance = nuid.Next()
	}
	if cfg.Presence != nil {
		// Counted by the others from now on.
		if _, err := cfg.Presence.Put(ctx, cfg.Instance, []byte("0")); err != nil {
			return nil, fmt.Errorf("cannot write this scorer's presence key in %q: %w", cfg.Presence.Bucket(), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Consumer{cfg: cfg, stream: stream, cons: cons, notify: make(chan struct{}, 1), parts: make([]part, len(cons)), cancel: cancel,
		heads: make([]jetstream.Msg, len(cons)), headSeq: make([]uint64, len(cons)), headPin: make([]string, len(cons))}
	c.ackWait = make([]time.Duration, len(cons))
	for p, cn := range cons {
		if info := cn.CachedInfo(); info != nil {
			c.ackWait[p] = info.Config.AckWait
		}
	}
	for p := range c.parts {
		c.parts[p].ch = make(chan jetstream.Msg, cfg.PullBatch)
		// Unknown until the first pull answers: wait for it, so that no
		// partition starts ahead of another's backlog.
		c.parts[p].backlog.Store(c.pulls(p))
	}
	if cfg.Presence != nil && cfg.Rebalance >= 0 && cfg.Only == nil {
		// The share before the first pull: an instance that joins others
		// which own nothing yet pulls only the partitions it prefers
		// (share.prefers), and one that joins owners pulls only while
		// short of its share, from its first pull.
		c.check(ctx)
	}
	for p := range cons {
		if !c.pulls(p) {
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.pull(ctx, p)
		}()
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.watch(ctx)
	}()
	return c, nil
}

// pulls reports whether this instance pulls partition p (Config.Only).
func (c *Consumer) pulls(p int) bool {
	return c.cfg.Only == nil || slices.Contains(c.cfg.Only, p)
}

// Stop stops pulling, naks the messages pulled but not handed on (so that
// the next owner gets them at once), and unpins the partitions this instance
// owns, so that the others take them over without waiting for PinnedTTL.
// Call it after the pipeline has drained (its messages are acked or left for
// redelivery). Stop may be called more than once.
func (c *Consumer) Stop(ctx context.Context) {
	c.stopping.Store(true)
	c.cancel()
	c.wg.Wait()
	// A keep-alive pull still at the server when the partition is unpinned
	// below would be pinned anew, to this stopped instance, and the others
	// would wait PinnedTTL for it: wait for the answers first (each comes
	// within probeWait, or nats.go's own timeout a second later).
	until := time.Now().Add(c.probeWait() + 2*time.Second)
	for p := range c.parts {
		for c.parts[p].probing.Load() && time.Now().Before(until) {
			time.Sleep(5 * time.Millisecond) // polling the probe's goroutine
		}
	}
	for p := range c.parts {
		if m := c.heads[p]; m != nil {
			nak(m)
			c.heads[p] = nil
		}
		for drained := false; !drained; {
			select {
			case m := <-c.parts[p].ch:
				nak(m)
			default:
				drained = true
			}
		}
	}
	if c.cfg.Presence != nil {
		if err := c.cfg.Presence.Delete(ctx, c.cfg.Instance); err != nil {
			c.cfg.Log.Warn("cannot delete this scorer's presence key; it expires by itself", "err", err)
		}
	}
	for p := range c.parts {
		if c.disown(p) {
			if err := c.stream.UnpinConsumer(ctx, schemas.ScorerConsumer(p), schemas.ScorerGroup); err != nil {
				c.cfg.Log.Warn("cannot unpin a partition at stop; it moves after its pinned TTL", "partition", p, "err", err)
			}
		}
	}
}

// Quiesce prepares a clean stop that leaves the next owners nothing to
// catch up: it stops sending pulls, lets the pulls under way end (at most
// a pull expiry, PinnedTTL/3) and returns once Fetch has returned every
// message they delivered (or ctx ended). The partitions stay this
// instance's meanwhile (keep-alive pulls), so the pipeline scores and acks
// them; then it drains and saves, and Stop unpins with nothing to give
// back. Without it, Stop gives back (nak) what was pulled and not handed
// on, and the next owner catches those messages up partition by
// partition, ahead of the other partitions' messages that came before them
// in the stream (see pipeline.RestorePartition). Fetch must go on being
// called until Quiesce returns.
func (c *Consumer) Quiesce(ctx context.Context) error {
	c.quiescing.Store(true)
	c.wake()
	for {
		quiet := true
		for p := range c.parts {
			if c.pulls(p) && !c.parts[p].quiet.Load() {
				quiet = false
			}
		}
		if quiet && c.handedOn.Load() == c.released.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot quiesce the partition consumer: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond): // polling the pullers and Fetch
		}
	}
}

// quiet is partition p's puller after Quiesce: it pulls no more, and keeps
// p's pin (keep-alive pulls that deliver nothing) while p's messages are
// scored and acked, until ctx ends.
func (c *Consumer) quiet(ctx context.Context, p int) {
	pt := &c.parts[p]
	pt.backlog.Store(false) // none of p's messages to wait for in Fetch's merge
	pt.quiet.Store(true)
	c.wake()
	t := time.NewTicker(c.pullWait())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if c.owns(p) {
				c.keepPin(p)
			}
		}
	}
}

// pullWait is the expiry of every pull, well within PinnedTTL so that a
// pinned instance's pulls keep its pin.
func (c *Consumer) pullWait() time.Duration { return c.cfg.PinnedTTL / 3 }

// pull pulls partition p until ctx ends, handing on its messages.
func (c *Consumer) pull(ctx context.Context, p int) {
	var lastErr time.Time
	warn := func(msg string, err error) {
		if time.Since(lastErr) > 5*time.Second {
			c.cfg.Log.Warn(msg, "partition", p, "err", err)
			lastErr = time.Now()
		}
	}
	// batch is the pull being handed on; next, one sent ahead once batch
	// is complete, so that the partition's messages keep flowing while
	// batch is handed on (else every PullBatch messages would wait a round
	// trip, and Fetch's merge with them). sent and nextSent are when they
	// were sent.
	var batch jetstream.MessageBatch
	var sent, unpinned time.Time
	for ctx.Err() == nil {
		c.stall()
		if batch == nil && c.quiescing.Load() {
			c.quiet(ctx, p)
			return
		}
		if batch == nil {
			if wait := c.idle(p); wait > 0 {
				// Releasing or sitting out a release: no pull; keep the pin
				// while the release waits for acks, and complete it as soon
				// as they are in.
				if c.owns(p) && time.Since(c.parts[p].lastPull()) >= c.pullWait()/2 {
					c.keepPin(p)
				}
				if c.releasingNow(p) {
					c.releaseIfAcked(ctx, p)
					wait = min(wait, c.probeWait())
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
			if !c.owns(p) && !c.mayPull(p) {
				// This instance has its share: p goes to one short of
				// theirs (balance), unless no one takes it (a crashed
				// owner's partition when every survivor has its share by
				// an instance count that still counts the crashed one):
				// checked every pull expiry, as often as a waiting pull
				// would be sent.
				if c.parts[p].backlog.Swap(false) {
					c.wake()
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(c.pullWait()):
				}
				c.orphaned(ctx, p)
				continue
			}
			var err error
			if batch, sent, err = c.fetch(p); err != nil {
				warn("cannot pull a partition, retrying", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
		}
		var next jetstream.MessageBatch
		var nextSent time.Time
		n := 0
		msgs := batch.Messages()
		for msg := range msgs {
			// Pull ahead only once the server has delivered the whole
			// batch (the rest is buffered here): it serves a client's
			// waiting pulls in turn, one message each, so two pulls waiting
			// at once would split a partition's messages between them, and
			// they would be handed on out of stream order.
			if n++; next == nil && n+len(msgs) >= c.cfg.PullBatch && c.idle(p) <= 0 && !c.quiescing.Load() {
				next, nextSent, _ = c.fetch(p) // on error, the next pull is sent after this batch
			}
			if !c.saw(p, msg, sent) {
				c.fenced.Add(1)
				// Delivered under a pin this instance lost: given back,
				// unless it may have been redelivered already (buffered
				// here through a stall).
				c.giveBack(owned{Msg: msg, c: c, p: p, pin: pinOf(msg), sent: sent})
				if time.Since(unpinned) > c.pullWait() {
					// The server still pins this instance under the dead
					// pin (the fence's unpin failed): unpin it again, or
					// every message would come back here to be nakked.
					unpinned = time.Now()
					c.unpinIf(ctx, p, pinOf(msg))
				}
				continue
			}
			msg = owned{Msg: msg, c: c, p: p, pin: pinOf(msg), sent: sent}
			if !c.handOn(ctx, p, msg) {
				if c.stopping.Load() { // Stop, not a cancelled ctx (a crash leaves them to the ack wait)
					nak(msg)
					for _, b := range []jetstream.MessageBatch{batch, next} {
						if b != nil {
							for m := range b.Messages() {
								nak(m)
							}
						}
					}
				}
				return
			}
		}
		if n == 0 && !c.owns(p) {
			// An orphan pulled with nothing delivered: another instance
			// took it. Probed again before the next pull (mayPull).
			c.parts[p].orphan.Store(false)
		}
		if n == 0 && c.parts[p].backlog.Swap(false) {
			// Nothing came although more was pending (the stream's limits
			// removed it, or another client holds the pin): nothing to wait for.
			c.wake()
		}
		c.answered(p, batch, sent, n, c.pullWait())
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrPinIDMismatch) && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			warn("a partition's pull ended with an error", err)
		}
		batch, sent = next, nextSent
	}
}

// answered renews p's lease with a pull sent at sent that has ended after n
// messages, or loses p if the server refused it (pin id mismatch). The
// server answered the pull if it delivered a message, or ended it before the
// client's own timeout (the request's expiry plus 1 s in nats.go) could: a
// status (408 at expiry, 409 for max bytes). A pull that ended later may
// never have reached the server and renews nothing.
func (c *Consumer) answered(p int, b jetstream.MessageBatch, sent time.Time, n int, wait time.Duration) {
	err := b.Error()
	switch {
	case errors.Is(err, jetstream.ErrPinIDMismatch):
		c.lose(p, "pull refused: pin id mismatch")
	case n > 0:
		// Renewed at the first message (saw).
	case err == nil || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, jetstream.ErrMaxBytesExceeded):
		// nats.go's own timer starts after the pull is sent and ends it
		// at its expiry plus 1 s: seen ended before that, the server
		// ended it.
		if time.Since(sent) < wait+time.Second-10*time.Millisecond {
			c.renew(p, "", sent)
		}
	}
}

// renew extends p's lease to a pull sent at sent under pin ("": the pin p
// has), if this instance still holds that pin and the lease had not ended
// when the pull was sent (else the server may have unpinned it before the
// pull arrived, and pinned the next pull anew).
func (c *Consumer) renew(p int, pin string, sent time.Time) {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.pin == "" || (pin != "" && pt.pin != pin) {
		return
	}
	if s := sent.UnixNano(); s > pt.lease && s < pt.lease+int64(c.leaseTerm()) {
		pt.lease = s
	}
}

// leaseTerm is how long after a pull the server answered this instance
// still counts the pull's pin as its own.
func (c *Consumer) leaseTerm() time.Duration { return c.cfg.PinnedTTL - c.cfg.LeaseMargin }

// valid reports whether this instance holds partition p under pin and its
// lease has not ended: only then does it hand on or ack p's messages.
func (c *Consumer) valid(p int, pin string) bool {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pin != "" && pt.pin == pin && (c.noFence.Load() || time.Now().UnixNano() < pt.lease+int64(c.leaseTerm()))
}

// expired returns p's pin if this instance holds it and its lease ended.
func (c *Consumer) expired(p int) string {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.pin != "" && !c.noFence.Load() && time.Now().UnixNano() >= pt.lease+int64(c.leaseTerm()) {
		return pt.pin
	}
	return ""
}

// fence ends this instance's ownership of p under pin, whose lease ended
// (the instance stalled, or the server did not answer its pulls, for
// PinnedTTL minus LeaseMargin): the server may have pinned another
// instance already. It gives back (nak) the messages of p pulled and not
// fetched, calls Owner.Lost, and unpins pin if the server still names it,
// so that the next pull is pinned anew (this instance's or another's).
// Messages of p fetched and not acked are given back by their Ack.
func (c *Consumer) fence(ctx context.Context, p int, pin string) {
	pt := &c.parts[p]
	pt.hook.Lock()
	if !c.disownIf(p, pin) {
		pt.hook.Unlock()
		return
	}
	c.fences.Add(1)
	for drained := false; !drained; {
		select {
		case m := <-pt.ch:
			c.fenced.Add(1)
			c.released.Add(1)
			c.giveBack(m)
		default:
			drained = true
		}
	}
	c.cfg.Log.Warn("partition fenced off: no pull answered within its lease, another instance may own it", "partition", p,
		"lease", c.leaseTerm(), "since_last_answered_pull", time.Since(time.Unix(0, c.leaseOf(p))))
	c.cfg.Owner.Lost(p)
	pt.hook.Unlock()
	c.unpinIf(ctx, p, pin)
}

// unpinIf unpins partition p if the server still pins it to pin (checked
// first: an unpin would end another instance's pin as well).
func (c *Consumer) unpinIf(ctx context.Context, p int, pin string) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := c.cons[p].Info(cctx)
	if err != nil {
		return // retried when a message comes under the dead pin
	}
	if pinnedClient(info) == pin {
		if err := c.stream.UnpinConsumer(cctx, schemas.ScorerConsumer(p), schemas.ScorerGroup); err != nil {
			c.cfg.Log.Warn("cannot unpin a fenced partition; retried when a message comes under its pin", "partition", p, "err", err)
		}
	}
}

func (c *Consumer) leaseOf(p int) int64 {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.lease
}

// stall waits while a test holds the gate.
func (c *Consumer) stall() {
	c.gate.RLock()
	c.gate.RUnlock() //nolint:staticcheck // an empty critical section: waits for the gate
}

// fetch sends a pull of partition p in the scorers' group, with this
// instance's pin id when it has one (the jetstream consumer keeps it), and
// returns when it was sent.
func (c *Consumer) fetch(p int) (jetstream.MessageBatch, time.Time, error) {
	c.stall()
	now := time.Now()
	c.parts[p].pulled.Store(now.UnixNano())
	b, err := c.cons[p].Fetch(c.cfg.PullBatch, jetstream.FetchMaxWait(c.pullWait()), jetstream.FetchPriorityGroup(schemas.ScorerGroup))
	return b, now, err
}

// nak asks for msg's redelivery now (to whoever owns its partition next);
// an error only delays it to the ack wait.
func nak(m jetstream.Msg) { _ = m.Nak() }

// handOn gives msg to Fetch, sending keep-alive pulls while Fetch does not
// take it (the pipeline is busy). It reports false when ctx ended first. A
// message whose pin's lease ended meanwhile is not handed on: p is fenced
// off, and the message given back.
func (c *Consumer) handOn(ctx context.Context, p int, msg jetstream.Msg) bool {
	c.stall()
	if c.owns(p) && time.Since(c.parts[p].lastPull()) >= c.pullWait() {
		// Handing on a batch can take longer than PinnedTTL: the server
		// must hear from this instance meanwhile.
		c.keepPin(p)
	}
	pin := pinOf(msg)
	if !c.valid(p, pin) {
		c.drop(ctx, p, msg)
		return true
	}
	select {
	case c.parts[p].ch <- msg:
		c.handedOn.Add(1)
		c.wake()
		return true
	default:
	}
	keep := time.NewTicker(c.pullWait())
	defer keep.Stop()
	for {
		select {
		case c.parts[p].ch <- msg:
			c.handedOn.Add(1)
			c.wake()
			return true
		case <-ctx.Done():
			return false
		case <-keep.C:
			c.stall()
			if !c.valid(p, pin) {
				c.drop(ctx, p, msg)
				return true
			}
			c.keepPin(p)
		}
	}
}

// drop gives back msg, of partition p, that may no longer be handed on:
// p's lease ended (p is fenced off) or p is no longer this instance's.
func (c *Consumer) drop(ctx context.Context, p int, msg jetstream.Msg) {
	c.fenceExpired(ctx, p)
	c.fenced.Add(1)
	c.giveBack(msg)
	if !c.owns(p) {
		c.parts[p].backlog.Store(false) // none of p's messages to wait for
		c.wake()
	}
}

// fenceExpired fences p off if its lease ended.
func (c *Consumer) fenceExpired(ctx context.Context, p int) {
	if pin := c.expired(p); pin != "" {
		c.fence(ctx, p, pin)
	}
}

func pinOf(m jetstream.Msg) string { return m.Headers().Get(PinIDHeader) }

// wake tells a waiting Fetch that a partition's state changed.
func (c *Consumer) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// keepPin sends a pull of partition p with this instance's pin id that can
// deliver nothing (max bytes 1: the server answers 409 to a message, or lets
// it expire): it resets the server's PinnedTTL timer, and its answer renews
// the lease. It does not wait for the answer.
func (c *Consumer) keepPin(p int) {
	c.stall()
	pt := &c.parts[p]
	if !pt.probing.CompareAndSwap(false, true) {
		return // one in flight: its answer comes within probeWait
	}
	now := time.Now()
	pt.pulled.Store(now.UnixNano())
	b, err := c.cons[p].Fetch(1, jetstream.FetchMaxBytes(1), jetstream.FetchMaxWait(c.probeWait()), jetstream.FetchPriorityGroup(schemas.ScorerGroup))
	if err != nil {
		pt.probing.Store(false)
		return
	}
	go func() {
		defer pt.probing.Store(false)
		n := 0
		for m := range b.Messages() {
			// None should fit in 1 byte; one that came anyway is given
			// back at once rather than left to the ack wait.
			c.keptBack.Add(1)
			nak(m)
			n++
		}
		c.stall()
		if n > 0 {
			return // the pin it came under is seen by the puller's next pull
		}
		c.answered(p, b, now, 0, c.probeWait())
	}()
}

// probeWait is the expiry of keep-alive pulls: short, so that their answer
// (408 at expiry when nothing is pending) renews the lease soon after.
func (c *Consumer) probeWait() time.Duration { return min(c.pullWait(), 100*time.Millisecond) }

// saw notes msg's position and pin id, pulled by a pull sent at sent: a new
// pin means p is (again) this instance's, from then. It reports false for a
// message delivered under a pin this instance fenced off (it must not be
// handed on).
func (c *Consumer) saw(p int, msg jetstream.Msg, sent time.Time) bool {
	pin := pinOf(msg)
	pt := &c.parts[p]
	pt.mu.Lock()
	old, dead := pt.pin, pt.dead
	pt.mu.Unlock()
	if pin != "" && pin == dead {
		// Not this instance's: its position and backlog must not hold
		// Fetch's merge back.
		return false
	}
	var seq uint64
	redelivered := false
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		pt.last.Store(seq)
		pt.backlog.Store(md.NumPending > 0)
		redelivered = md.NumDelivered > 1
	}
	if pin == "" {
		return true
	}
	if old == pin {
		c.renew(p, pin, sent)
		return true
	}
	pt.hook.Lock()
	defer pt.hook.Unlock()
	pt.mu.Lock()
	old = pt.pin
	if old == pin { // a concurrent change: already this pin
		pt.mu.Unlock()
		return true
	}
	pt.pin = pin
	// The server pinned pin when it delivered msg, after the pull arrived.
	pt.lease = sent.UnixNano()
	pt.mu.Unlock()
	if old != "" {
		// Pinned anew without a refused pull in between: the old pin
		// ended (its PinnedTTL) while this instance stalled.
		c.lost.Add(1)
		c.cfg.Owner.Lost(p)
	} else {
		c.owned.Add(1)
	}
	c.acq.Add(1)
	pt.firstRedelivered.Store(redelivered)
	// A restore and catch-up can take longer than PinnedTTL (several
	// partitions acquired at once wait for each other): keep the pin, as
	// handOn does while the pipeline is busy, or the lease would end
	// before the first message is handed on, and the partition would be
	// fenced off and acquired (restored) again.
	acquired := make(chan struct{})
	go func() {
		t := time.NewTicker(c.pullWait())
		defer t.Stop()
		for {
			select {
			case <-acquired:
				return
			case <-t.C:
				c.keepPin(p)
			}
		}
	}()
	c.cfg.Owner.Acquired(p, seq)
	close(acquired)
	return true
}

// Holds reports whether this instance holds partition p's pin within its
// lease (the fence, in the package doc): only then may it judge messages of
// p that it has not from Fetch (a takeover's replay, read from the
// stream). Once the lease ended, p is lost (Owner.Lost) at the next check.
func (c *Consumer) Holds(p int) bool {
	if p < 0 || p >= len(c.parts) {
		return false
	}
	pt := &c.parts[p]
	pt.mu.Lock()
	pin := pt.pin
	pt.mu.Unlock()
	return c.valid(p, pin)
}

// FirstRedelivered reports whether the first message of partition p under
// this instance's current pin (Owner.Acquired's firstSeq) had been
// delivered before: to a previous owner that did not ack it (it stopped
// and gave it back, or crashed and its ack wait passed). Then other
// messages that owner was delivered may still be unacked and come back
// after later ones; otherwise every message delivered before is below the
// first one (a partition's first deliveries are in stream order). Call it
// from Owner.Acquired.
func (c *Consumer) FirstRedelivered(p int) bool {
	return p >= 0 && p < len(c.parts) && c.parts[p].firstRedelivered.Load()
}

// lose records that p is no longer this instance's, if it was.
func (c *Consumer) lose(p int, why string) { c.loseIf(p, "", why) }

// loseIf is lose if p's pin is still pin ("": whatever it is).
func (c *Consumer) loseIf(p int, pin, why string) {
	pt := &c.parts[p]
	pt.hook.Lock()
	defer pt.hook.Unlock()
	if c.disownIf(p, pin) {
		c.cfg.Log.Info("partition ownership ended", "partition", p, "reason", why)
		c.cfg.Owner.Lost(p)
	}
}

// disown clears p's pin and reports whether this instance held it.
func (c *Consumer) disown(p int) bool { return c.disownIf(p, "") }

// disownIf is disown if p's pin is pin ("": whatever it is).
func (c *Consumer) disownIf(p int, pin string) bool {
	pt := &c.parts[p]
	pt.mu.Lock()
	if pin != "" && pt.pin != pin {
		pt.mu.Unlock()
		return false
	}
	had := pt.pin != ""
	if had {
		// Lost for good (refused, another pin named, released, fenced):
		// the partition is this instance's again only under a new pin.
		pt.dead = pt.pin
	}
	pt.pin = ""
	pt.releasing = false
	pt.mu.Unlock()
	pt.backlog.Store(false) // its messages no longer come here: none to wait for
	if had {
		c.owned.Add(-1)
		c.lost.Add(1)
	}
	return had
}

func (c *Consumer) owns(p int) bool {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.pin != ""
}

// orphaned reads p's consumer info and notes whether p is an orphan: no
// client pinned, messages pending (mayPull).
func (c *Consumer) orphaned(ctx context.Context, p int) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := c.cons[p].Info(cctx)
	cancel()
	if err != nil {
		return
	}
	c.parts[p].orphan.Store(isOrphan(info))
}

// pinnedClient returns the client a partition's consumer pins in the
// scorers' priority group, or "".
func pinnedClient(info *jetstream.ConsumerInfo) string {
	for _, g := range info.PriorityGroups {
		if g.Group == schemas.ScorerGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// isOrphan reports whether a partition's consumer has messages pending and
// no client pinned (mayPull).
func isOrphan(info *jetstream.ConsumerInfo) bool {
	return pinnedClient(info) == "" && info.NumPending > 0
}

// releasingNow reports whether p's release is under way.
func (c *Consumer) releasingNow(p int) bool {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.releasing
}

// idle reports how long p's puller should wait before pulling: while a
// release is under way, and during the sit-out after one.
func (c *Consumer) idle(p int) time.Duration {
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	if pt.releasing {
		return c.pullWait()
	}
	return time.Until(pt.until)
}

// KeptBack returns how many messages keep-alive pulls received and gave
// back (nak): none is expected.
func (c *Consumer) KeptBack() uint64 { return c.keptBack.Load() }

// Fenced returns how many messages this instance gave back (nak) instead of
// handing them on or acking them because their partition's lease had
// ended, and how many times a partition was lost that way.
func (c *Consumer) Fenced() (messages, partitions uint64) { return c.fenced.Load(), c.fences.Load() }

// RefusedAcks returns how many of the messages Fenced counts were refused at
// their ack: scored by this instance (their results written) after their
// partition's lease ended, and given back to be scored again by its next
// owner.
func (c *Consumer) RefusedAcks() uint64 { return c.refused.Load() }

// Owned returns the partitions this instance owns, in order.
func (c *Consumer) Owned() []int {
	var out []int
	for p := range c.parts {
		if c.owns(p) {
			out = append(out, p)
		}
	}
	return out
}

// Drained reports whether the server has no message of an owned partition
// left to deliver or waiting for its ack (each owned partition consumer's
// NumPending and NumAckPending are 0), asking it; false when it cannot tell
// (an error, or ctx ended). Call it with nothing of this instance's in
// flight: messages unacked then are a previous owner's, redelivered after
// their ack wait (a scorer killed while it held them), not learned yet.
func (c *Consumer) Drained(ctx context.Context) bool {
	for _, p := range c.Owned() {
		info, err := c.PartitionInfo(ctx, p)
		if err != nil || info.NumPending > 0 || info.NumAckPending > 0 {
			return false
		}
	}
	return true
}

// Fetch returns up to batch messages of the owned partitions, waiting at
// most Config.FetchWait for the first (opts are ignored: the wait is the
// Config's). Fetch must not be called concurrently.
//
// The partitions are merged in stream order: a message is returned only
// when no owned partition with a backlog (its last message pulled had more
// pending after it) may still deliver an earlier one. So a scorer owning
// every partition sees the stream's order, as with one consumer, and a
// backlog of one partition never runs ahead of another's in event time (the
// silence sweep and the entity windows judge by event time across
// partitions). At the live tail (no backlog) messages published within a
// pull's round trip may come out of stream order across partitions, never
// within one.
func (c *Consumer) Fetch(batch int, _ ...jetstream.FetchOpt) (jetstream.MessageBatch, error) {
	out := make(chan jetstream.Msg, batch)
	t := time.NewTimer(c.cfg.FetchWait)
	defer t.Stop()
	c.stall()
	for len(out) < batch {
		if p := c.next(); p >= 0 {
			out <- c.heads[p] // an owned: its ack is fenced
			c.heads[p] = nil
			c.released.Add(1)
			continue
		}
		if len(out) > 0 {
			break
		}
		select {
		case <-c.notify:
			continue
		case <-t.C:
		}
		break
	}
	close(out)
	return fetched(out), nil
}

// next returns the partition whose head is the next message in stream
// order, or -1 when there is none yet.
func (c *Consumer) next() int {
	best := -1
	for p := range c.parts {
		// A head whose pin's lease ended is given back: p's messages go
		// to its next owner (fence).
		for c.heads[p] != nil && !c.valid(p, c.headPin[p]) {
			c.fenced.Add(1)
			c.released.Add(1)
			c.giveBack(c.heads[p])
			c.heads[p] = nil
			select {
			case m := <-c.parts[p].ch:
				c.setHead(p, m)
			default:
			}
		}
		if c.heads[p] == nil {
			select {
			case m := <-c.parts[p].ch:
				c.setHead(p, m)
				if !c.valid(p, c.headPin[p]) {
					c.fenced.Add(1)
					c.released.Add(1)
					c.giveBack(m)
					c.heads[p] = nil
					continue
				}
			default:
				continue
			}
		}
		if best < 0 || c.headSeq[p] < c.headSeq[best] {
			best = p
		}
	}
	if best < 0 {
		return -1
	}
	for p := range c.parts {
		pt := &c.parts[p]
		if c.heads[p] == nil && pt.backlog.Load() && pt.last.Load() < c.headSeq[best] {
			return -1 // p's next message may come before best's
		}
	}
	return best
}

func (c *Consumer) setHead(p int, m jetstream.Msg) {
	c.heads[p], c.headSeq[p], c.headPin[p] = m, 0, pinOf(m)
	if md, err := m.Metadata(); err == nil {
		c.headSeq[p] = md.Sequence.Stream
	}
}

// ErrFenced is returned by the Ack and DoubleAck of a message Fetch
// returned when its partition's lease had ended before the ack (the
// instance stalled, see the package doc): the message was given back (nak)
// instead, for the partition's next owner to score.
var ErrFenced = errors.New("cannot ack: the partition's lease ended (fenced off); the message was given back to its next owner")

// owned is a message Fetch returned: acked only while this instance still
// holds the pin it was delivered under within its lease.
type owned struct {
	jetstream.Msg
	c   *Consumer
	p   int
	pin string
	// sent is when the pull that delivered it was sent: the server
	// delivered it no earlier.
	sent time.Time
}

// Ack acks the message if its partition is still this instance's, else
// gives it back (ErrFenced).
func (m owned) Ack() error {
	if !m.c.valid(m.p, m.pin) {
		return m.giveBack()
	}
	return m.Msg.Ack()
}

// DoubleAck is Ack waiting for the server's confirmation.
func (m owned) DoubleAck(ctx context.Context) error {
	if !m.c.valid(m.p, m.pin) {
		return m.giveBack()
	}
	return m.Msg.DoubleAck(ctx)
}

func (m owned) giveBack() error {
	m.c.fenced.Add(1)
	m.c.refused.Add(1)
	m.c.giveBack(m)
	return ErrFenced
}

// giveBack naks m, fenced off, so that the partition's next owner gets it at
// once, unless the server may already have redelivered it for its ack wait
// (a nak of that older delivery would make the server deliver it once more,
// to an owner that may hold it already): that one is left alone.
func (c *Consumer) giveBack(m jetstream.Msg) {
	if o, ok := m.(owned); ok && c.ackWait[o.p] > 0 && time.Since(o.sent) >= c.ackWait[o.p]-c.cfg.LeaseMargin {
		return
	}
	nak(m)
}

// fetched is a jetstream.MessageBatch whose messages are all received.
type fetched chan jetstream.Msg

func (f fetched) Messages() <-chan jetstream.Msg { return f }
func (f fetched) Error() error                   { return nil }

// Info sums the partition consumers' states: NumPending, NumAckPending and
// NumWaiting are sums, Delivered and AckFloor the highest stream and
// consumer sequences, and Config the first consumer's with FilterSubjects
// set to every partition's subjects (schemas.PartitionSubjects: what a
// catch-up after a checkpoint reads).
func (c *Consumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	var sum *jetstream.ConsumerInfo
	for p, cons := range c.cons {
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("cannot read partition %d's consumer: %w", p, err)
		}
		if sum == nil {
			s := *info
			s.Config.FilterSubject = ""
			s.Config.FilterSubjects = nil
			sum = &s
		} else {
			sum.NumPending += info.NumPending
			sum.NumAckPending += info.NumAckPending
			sum.NumWaiting += info.NumWaiting
			sum.NumRedelivered += info.NumRedelivered
			sum.Delivered.Stream = max(sum.Delivered.Stream, info.Delivered.Stream)
			sum.AckFloor.Stream = max(sum.AckFloor.Stream, info.AckFloor.Stream)
		}
		sum.Config.FilterSubjects = append(sum.Config.FilterSubjects, schemas.PartitionSubjects(p)...)
	}
	return sum, nil
}

// Awaited reports whether partition p's coverage of the class view that
// spans partitions (pipeline/cluster.ClassSync), last claimed by instance
// claimer ("" when no instance claims it) and unchanged for a while, is
// still to be waited for: claimer is a live instance (its presence key was
// there at the last balance check: busy, as in a takeover of its own, or
// waiting for the stream's leader), or p's consumer has a pinned client or
// messages pending or unacked (its owner died and a takeover is under way
// or due: the new owner claims p once it has it). When p's consumer
// cannot be read, it says true (the caller bounds the wait). Without a
// presence bucket only the consumer's state counts.
func (c *Consumer) Awaited(ctx context.Context, p int, claimer string) bool {
	if present := c.present.Load(); claimer != "" && present != nil && (*present)[claimer] {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := c.PartitionInfo(cctx, p)
	if err != nil {
		return true
	}
	return pinnedClient(info) != "" || info.NumPending > 0 || info.NumAckPending > 0
}

// Instance returns this instance's name (its presence key in
// Config.Presence).
func (c *Consumer) Instance() string { return c.cfg.Instance }

// Present reports whether instance's presence key is in Config.Presence now
// (read from the server): the instance rewrote it within its expiry (two
// PinnedTTLs), alive or only just dead. Without a presence bucket it says
// false: nothing tells.
func (c *Consumer) Present(ctx context.Context, instance string) (bool, error) {
	if c.cfg.Presence == nil || instance == "" {
		return false, nil
	}
	_, err := c.cfg.Presence.Get(ctx, instance)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return false, nil
	}
	return false, fmt.Errorf("cannot read presence key %q: %w", instance, err)
}

// PartitionInfo returns partition p's consumer state as the server has it:
// Delivered.Stream, the highest stream sequence delivered to any instance
// (a new owner catches up to it, see pipeline.RestorePartition), and
// AckFloor.Stream, at or below which every message of p is acked (the
// position up to which an owner's state is known to hold every message of
// p, see pipeline.SavePartition).
func (c *Consumer) PartitionInfo(ctx context.Context, p int) (*jetstream.ConsumerInfo, error) {
	if p < 0 || p >= len(c.cons) {
		return nil, fmt.Errorf("cannot read partition %d's consumer: there are %d", p, len(c.cons))
	}
	info, err := c.cons[p].Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot read partition %d's consumer: %w", p, err)
	}
	return info, nil
}

// watch checks lag, ownership and balance every Rebalance interval.
func (c *Consumer) watch(ctx context.Context) {
	every := c.cfg.Rebalance
	if every < 0 {
		every = c.cfg.PinnedTTL
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.stall()
			c.check(ctx)
		}
	}
}

// check reads every partition consumer's info once: lag for the metrics,
// the server's pinned id (an instance that thinks it owns a partition pinned
// to another pin has lost it), the instance estimate, and releases.
func (c *Consumer) check(ctx context.Context) {
	owned := 0
	for p, cons := range c.cons {
		if !c.pulls(p) {
			continue
		}
		pt := &c.parts[p]
		// The pin before the info: a pin acquired meanwhile is not
		// mistaken for one the server no longer names.
		pt.mu.Lock()
		mine, releasing := pt.pin, pt.releasing
		pt.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cons.Info(cctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				c.cfg.Log.Warn("cannot read a partition's consumer", "partition", p, "err", err)
			}
			return
		}
		pt.pending.Store(info.NumPending)
		pt.waiting.Store(int64(info.NumWaiting))
		pt.ackPending.Store(uint64(info.NumAckPending))
		pt.orphan.Store(isOrphan(info))
		if mine == "" {
			continue
		}
		if pin := c.expired(p); pin != "" {
			c.fence(ctx, p, pin)
			continue
		}
		if pinnedClient(info) != mine {
			c.loseIf(p, mine, "the server pins another client or none")
			continue
		}
		owned++
		if releasing && info.NumAckPending == 0 {
			c.release(ctx, p)
		} else if releasing && c.releaseStuck(p) {
			// Messages a previous owner took and never acked are
			// redelivered only to a pull, after their AckWait: while
			// this instance does not pull, they stay pending for ever
			// and the release never completes. Pull again for an
			// AckWait (the redeliveries come, are scored and acked);
			// the rebalancer then may choose it again.
			c.cfg.Log.Info("abandoning a partition's release: messages still unacked are redelivered only to a pull",
				"partition", p, "ack_pending", info.NumAckPending)
			pt.mu.Lock()
			pt.releasing, pt.keepUntil = false, time.Now().Add(c.releaseWait(p))
			pt.mu.Unlock()
		}
	}
	n, others, rank := c.instances(ctx)
	if c.cfg.Rebalance < 0 || n == 0 || c.cfg.Only != nil {
		c.share.Store(nil)
		return
	}
	sh := shareOf(len(c.cons), n, others)
	sh.rank, sh.fresh = rank, owned == 0 && c.owned.Load() == 0 && sh.most == 0
	c.share.Store(&sh)
	// Releases already under way count towards what this instance gives.
	give := sh.give(owned) - c.releasing()
	for ; give > 0; give-- {
		p := c.toRelease()
		if p < 0 {
			break
		}
		pt := &c.parts[p]
		pt.mu.Lock()
		pt.releasing, pt.releaseFrom = true, time.Now()
		pt.mu.Unlock()
		pt.backlog.Store(false) // no more pulls: none to wait for
		c.wake()
		c.cfg.Log.Info("releasing a partition for balance", "partition", p, "owned", owned, "instances", n,
			"fair_share_min", sh.floor, "fair_share_max", sh.ceil, "least_owned_by_another", sh.least)
	}
}

// share is the fair share of the partitions among the instances, as the
// last check saw them: each owns floor or ceil of partitions/instances.
type share struct {
	floor, ceil int
	// least is the fewest partitions another instance owned (its presence
	// key's count; -1 when there is no other instance).
	least int
	// n is the number of instances, rank this instance's place among their
	// names (0-based), and fresh whether no instance owned a partition
	// (every presence key's count 0, this instance's too): then each
	// instance pulls only the partitions it prefers (prefers).
	n, rank int
	fresh   bool
	// most is the most partitions another instance owned (0 when none).
	most int
}

func shareOf(parts, n int, others []int) share {
	sh := share{floor: parts / n, ceil: (parts + n - 1) / n, least: -1, n: n}
	for _, o := range others {
		if sh.least < 0 || o < sh.least {
			sh.least = o
		}
		sh.most = max(sh.most, o)
	}
	return sh
}

// prefers reports whether partition p is this instance's at the start: p
// modulo the instances is its rank. Instances that start together and see
// each other before the first message thus split the partitions floor or
// ceil each, rather than the first to pull taking them all and giving them
// on one Rebalance interval at a time, and only once each is acked (in
// the 3-node cluster test, the first scorer scored the whole first third,
// and after its kill one survivor scored everything else: 4 runs of 26,
// bench/RESULTS.md w1).
func (sh share) prefers(p int) bool { return sh.n <= 1 || p%sh.n == sh.rank }

// give is how many of owned partitions an instance gives up for balance:
// what it owns beyond ceil, or one when it owns more than floor and another
// instance owns two fewer (a fair share is then not reached, although no
// instance owns more than ceil: 6, 6, 4 of 16 partitions). Each release
// moves a partition from an instance to one owning at least two fewer (see
// takes), so the spread shrinks until every instance owns floor or ceil.
func (sh share) give(owned int) int {
	switch {
	case owned > sh.ceil:
		return owned - sh.ceil
	case owned > sh.floor && sh.least >= 0 && sh.least <= owned-2:
		return 1
	}
	return 0
}

// takes reports whether an instance owning owned partitions pulls the
// partitions it does not own (its waiting pulls get a released partition's
// pin): while it owns fewer than floor, or fewer than ceil when no other
// instance owns fewer than floor. An instance with its share does not
// compete with those short of theirs for a released partition.
func (sh share) takes(owned int) bool {
	return owned < sh.floor || (owned < sh.ceil && (sh.least < 0 || sh.least >= sh.floor))
}

// mayPull reports whether partition p, which this instance does not own, is
// pulled now: always without balance (no presence bucket, Rebalance < 0,
// Config.Only, before the first check), else when this instance takes
// partitions (share.takes) or when the last check found p with messages
// pending and no pinned client (an orphan: the instances short of their
// share did not take it, or their counts were stale, as after a crash).
func (c *Consumer) mayPull(p int) bool {
	sh := c.share.Load()
	switch {
	case sh == nil:
		return true
	case sh.fresh:
		// No instance owns a partition yet (the start): each pulls the
		// partitions it prefers, orphans included (at a start with a
		// backlog, every partition is one).
		return sh.prefers(p)
	}
	return sh.takes(int(c.owned.Load())) || c.parts[p].orphan.Load()
}

// releasing counts the partitions whose release is under way.
func (c *Consumer) releasing() int {
	n := 0
	for p := range c.parts {
		pt := &c.parts[p]
		pt.mu.Lock()
		if pt.releasing {
			n++
		}
		pt.mu.Unlock()
	}
	return n
}

// toRelease chooses the partition to release next: owned, not releasing
// and not kept (after a release given up), with no unacked message at the
// last check if there is one (a partition whose previous owner crashed with
// messages unacked cannot complete its release before their AckWait), the
// highest such; -1 if none.
func (c *Consumer) toRelease() int {
	best := -1
	for p := len(c.parts) - 1; p >= 0; p-- {
		pt := &c.parts[p]
		pt.mu.Lock()
		ok := pt.pin != "" && !pt.releasing && !time.Now().Before(pt.keepUntil)
		pt.mu.Unlock()
		if !ok {
			continue
		}
		if pt.ackPending.Load() == 0 {
			return p
		}
		if best < 0 {
			best = p
		}
	}
	return best
}

// instances rewrites this instance's presence key, whose value is the
// number of partitions it owns, and reads the keys (an ordered consumer of
// the bucket, as a key listing): n counts them, the live scorers (0 without
// a Presence bucket, or when it cannot be read); others are the counts of
// the other instances' keys that hold one (a key written by a version that
// did not is counted in n only).
func (c *Consumer) instances(ctx context.Context) (n int, others []int, rank int) {
	kv := c.cfg.Presence
	if kv == nil {
		return 0, nil, 0
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := kv.Put(cctx, c.cfg.Instance, strconv.AppendInt(nil, c.owned.Load(), 10)); err != nil {
		c.cfg.Log.Warn("cannot rewrite this scorer's presence key", "err", err)
		return 0, nil, 0
	}
	w, err := kv.WatchAll(cctx, jetstream.IgnoreDeletes())
	if err != nil {
		c.cfg.Log.Warn("cannot count the scorers' presence keys", "err", err)
		return 0, nil, 0
	}
	defer func() { _ = w.Stop() }()
	present := map[string]bool{}
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // the keys' current values are all read
				c.present.Store(&present)
				return n, others, rank
			}
			n++
			present[e.Key()] = true
			if e.Key() == c.cfg.Instance {
				continue
			}
			if e.Key() < c.cfg.Instance {
				rank++
			}
			if owned, err := strconv.Atoi(string(e.Value())); err == nil {
				others = append(others, owned)
			}
		case <-cctx.Done():
			c.cfg.Log.Warn("cannot count the scorers' presence keys", "err", cctx.Err())
			return 0, nil, 0
		}
	}
}

// releaseStuck reports whether p's release has waited longer than its
// consumer's AckWait (two PinnedTTLs when unknown) for its acks: whatever is
// still pending then was not delivered to this instance's workers since the
// release began, or was, and is due for redelivery.
func (c *Consumer) releaseStuck(p int) bool {
	wait := c.releaseWait(p)
	pt := &c.parts[p]
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.releasing && time.Since(pt.releaseFrom) > wait
}

// releaseWait is p's consumer's AckWait (two PinnedTTLs when unknown), at
// least a Rebalance interval.
func (c *Consumer) releaseWait(p int) time.Duration {
	if c.ackWait[p] > 0 {
		return max(c.ackWait[p], c.cfg.Rebalance)
	}
	return max(2*c.cfg.PinnedTTL, c.cfg.Rebalance)
}

// release gives up p, whose messages are all acked, if its release is
// still under way (the puller and the rebalancer both complete releases):
// it stops counting p as its own (Owner.Lost) before it unpins p, so that
// its view of ownership never overlaps the next owner's, and sits p out for
// two PinnedTTLs so that another instance's waiting pull gets it. When the
// unpin fails, the pin ends after PinnedTTL without pulls.
func (c *Consumer) release(ctx context.Context, p int) {
	pt := &c.parts[p]
	pt.hook.Lock()
	pt.mu.Lock()
	pin := pt.pin
	ok := pt.releasing && pin != ""
	if ok {
		pt.until = time.Now().Add(2 * c.cfg.PinnedTTL)
	}
	pt.mu.Unlock()
	if !ok || !c.disownIf(p, pin) {
		pt.hook.Unlock()
		return
	}
	c.cfg.Log.Info("partition ownership ended", "partition", p, "reason", "released for balance",
		"release_took", time.Since(pt.releaseFrom).Round(time.Millisecond))
	c.cfg.Owner.Lost(p)
	pt.hook.Unlock()
	c.unpinIf(ctx, p, pin)
}

// releaseIfAcked completes p's release, if it is under way and the server
// counts none of p's messages unacked: polled by p's puller between
// rebalance checks, so that a release takes about the pipeline's time to
// ack what it was handed, not a rebalance interval more.
func (c *Consumer) releaseIfAcked(ctx context.Context, p int) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := c.cons[p].Info(cctx)
	cancel()
	if err == nil && info.NumAckPending == 0 {
		c.release(ctx, p)
	}
}

// WriteMetrics writes the ownership metrics in the Prometheus text format:
// partitions owned, ownership changes, and each partition's pending
// messages (as of the last check).
func (c *Consumer) WriteMetrics(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s Event partitions this instance owns (pinned to it by the server).\n# TYPE %s gauge\n%s %d\n",
		schemas.MetricPartitionsOwned, schemas.MetricPartitionsOwned, schemas.MetricPartitionsOwned, c.owned.Load())
	fmt.Fprintf(w, "# HELP %s Partitions acquired and lost by this instance.\n# TYPE %s counter\n%s{change=\"acquired\"} %d\n%s{change=\"lost\"} %d\n",
		schemas.MetricPartitionChanges, schemas.MetricPartitionChanges, schemas.MetricPartitionChanges, c.acq.Load(), schemas.MetricPartitionChanges, c.lost.Load())
	fmt.Fprintf(w, "# HELP %s Partitions this instance fenced itself off (no pull answered within the lease: it may have stalled) and messages it gave back instead of handing them on or acking them.\n# TYPE %s counter\n%s{what=\"partitions\"} %d\n%s{what=\"messages\"} %d\n",
		schemas.MetricPartitionFenced, schemas.MetricPartitionFenced, schemas.MetricPartitionFenced, c.fences.Load(), schemas.MetricPartitionFenced, c.fenced.Load())
	fmt.Fprintf(w, "# HELP %s Messages of each partition not yet delivered to a scorer.\n# TYPE %s gauge\n", schemas.MetricPartitionPending, schemas.MetricPartitionPending)
	for p := range c.parts {
		fmt.Fprintf(w, "%s{partition=\"%s\"} %d\n", schemas.MetricPartitionPending, strconv.Itoa(p), c.parts[p].pending.Load())
	}
}

// State describes each partition's ownership as this instance sees it, for
// diagnostics: pin, lease left, dead pin, last sequence pulled, backlog,
// messages waiting for Fetch, and Fetch's head.
func (c *Consumer) State() string {
	var b strings.Builder
	for p := range c.parts {
		pt := &c.parts[p]
		pt.mu.Lock()
		pin, dead, left := pt.pin, pt.dead, time.Until(time.Unix(0, pt.lease+int64(c.leaseTerm())))
		pt.mu.Unlock()
		fmt.Fprintf(&b, "p%d pin=%q lease_left=%s dead=%q last=%d backlog=%v queued=%d releasing_wait=%s\n",
			p, pin, left.Round(time.Millisecond), dead, pt.last.Load(), pt.backlog.Load(), len(pt.ch), c.idle(p).Round(time.Millisecond))
	}
	return b.String()
}
