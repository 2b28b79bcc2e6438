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
// Balance: a pinned client would keep every partition it ever got. Each
// instance keeps a presence key in KV bucket schemas.KVScorers (rewritten
// every Rebalance interval, expiring after two PinnedTTLs, deleted at
// Stop); the number of keys is the number of instances N. (The consumers'
// NumWaiting, one waiting pull per instance, was tried first: an owner's
// pull sent ahead and its keep-alives count twice, and an estimate too high
// made two instances pass partitions back and forth.) Every Rebalance
// interval, an instance that owns more than ceil(P/N), having seen the same
// N the interval before, releases one partition: it stops pulling it, waits
// until none of its messages is unacked (the server's NumAckPending: what it
// handed on is scored and durable), stops counting it as its own
// (Owner.Lost), unpins it (the server's unpin API) and sits it out for two
// PinnedTTLs, so that another instance's waiting pull is pinned. The one-writer rule thus
// holds through a release as well.
package partition

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
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
// rebalancer, for a release), never two at once for the same partition;
// calls for different partitions may be concurrent. Acquired(p, firstSeq) is
// called before the message of stream sequence firstSeq, the first this
// instance gets under its new pin, is handed on: it may block (a restore),
// and the partition's messages wait. Lost(p) is called once the instance
// learns it lost p (refused pull, another pin in the consumer's info, or
// its own release); messages of p handed on before may still be in the
// pipeline: after a crash-free release none are unacked, after a pin lost
// to the PinnedTTL (this instance stalled that long) some may be.
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
	// the presence key rewritten (default and at most PinnedTTL); < 0 never
	// releases (checked every PinnedTTL).
	Rebalance time.Duration
	// Owner hears of acquired and lost partitions (default LogOwner).
	Owner Owner
	// Presence is the bucket of scorers' presence keys (bus.EnsurePartitions)
	// from which the instance count for balance is read; nil: no release for
	// balance.
	Presence jetstream.KeyValue
	// Instance names this instance's presence key (default a unique id).
	Instance string
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
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// stopping: Stop was called (messages pulled and not handed on are
	// nakked); a cancelled ctx alone leaves them to the ack wait.
	stopping atomic.Bool
	// lastN is the instance estimate of the previous rebalance check.
	lastN int
}

// part is one partition's ownership, guarded by its mu.
type part struct {
	mu sync.Mutex
	// pin is the pin id this instance holds, "" when it does not own it.
	pin string
	// releasing: the rebalancer is giving it up; the puller stops pulling.
	releasing bool
	// until: after a release, no pull before then.
	until   time.Time
	pending atomic.Uint64
	waiting atomic.Int64
	// ch holds messages handed on and not fetched yet (at most PullBatch).
	ch chan jetstream.Msg
	// last is the stream sequence of the last message pulled, and backlog
	// whether the consumer had more pending then: while it has, a message
	// of another partition after last waits (Fetch's merge).
	last    atomic.Uint64
	backlog atomic.Bool
	// pulled is when the last pull or keep-alive of p was sent (UnixNano).
	pulled atomic.Int64
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
		if _, err := cfg.Presence.Put(ctx, cfg.Instance, nil); err != nil {
			return nil, fmt.Errorf("cannot write this scorer's presence key in %q: %w", cfg.Presence.Bucket(), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &Consumer{cfg: cfg, stream: stream, cons: cons, notify: make(chan struct{}, 1), parts: make([]part, len(cons)), cancel: cancel,
		heads: make([]jetstream.Msg, len(cons)), headSeq: make([]uint64, len(cons))}
	for p := range c.parts {
		c.parts[p].ch = make(chan jetstream.Msg, cfg.PullBatch)
		// Unknown until the first pull answers: wait for it, so that no
		// partition starts ahead of another's backlog.
		c.parts[p].backlog.Store(true)
	}
	for p := range cons {
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

// Stop stops pulling, naks the messages pulled but not handed on (so that
// the next owner gets them at once), and unpins the partitions this instance
// owns, so that the others take them over without waiting for PinnedTTL.
// Call it after the pipeline has drained (its messages are acked or left for
// redelivery). Stop may be called more than once.
func (c *Consumer) Stop(ctx context.Context) {
	c.stopping.Store(true)
	c.cancel()
	c.wg.Wait()
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
	// trip, and Fetch's merge with them).
	var batch jetstream.MessageBatch
	for ctx.Err() == nil {
		if batch == nil {
			if wait := c.idle(p); wait > 0 {
				// Releasing or sitting out a release: no pull; keep the pin
				// while the release waits for acks.
				if c.owns(p) {
					c.keepPin(p)
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
			var err error
			if batch, err = c.fetch(p); err != nil {
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
		n := 0
		msgs := batch.Messages()
		for msg := range msgs {
			// Pull ahead only once the server has delivered the whole
			// batch (the rest is buffered here): it serves a client's
			// waiting pulls in turn, one message each, so two pulls waiting
			// at once would split a partition's messages between them, and
			// they would be handed on out of stream order.
			if n++; next == nil && n+len(msgs) >= c.cfg.PullBatch && c.idle(p) <= 0 {
				next, _ = c.fetch(p) // on error, the next pull is sent after this batch
			}
			c.saw(p, msg)
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
		if n == 0 && c.parts[p].backlog.Swap(false) {
			// Nothing came although more was pending (the stream's limits
			// removed it, or another client holds the pin): nothing to wait for.
			c.wake()
		}
		if err := batch.Error(); errors.Is(err, jetstream.ErrPinIDMismatch) {
			c.lose(p, "pull refused: pin id mismatch")
		} else if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			warn("a partition's pull ended with an error", err)
		}
		batch = next
	}
}

// fetch sends a pull of partition p in the scorers' group, with this
// instance's pin id when it has one (the jetstream consumer keeps it).
func (c *Consumer) fetch(p int) (jetstream.MessageBatch, error) {
	c.parts[p].pulled.Store(time.Now().UnixNano())
	return c.cons[p].Fetch(c.cfg.PullBatch, jetstream.FetchMaxWait(c.pullWait()), jetstream.FetchPriorityGroup(schemas.ScorerGroup))
}

// nak asks for msg's redelivery now (to whoever owns its partition next);
// an error only delays it to the ack wait.
func nak(m jetstream.Msg) { _ = m.Nak() }

// handOn gives msg to Fetch, sending keep-alive pulls while Fetch does not
// take it (the pipeline is busy). It reports false when ctx ended first.
func (c *Consumer) handOn(ctx context.Context, p int, msg jetstream.Msg) bool {
	if c.owns(p) && time.Since(c.parts[p].lastPull()) >= c.pullWait() {
		// Handing on a batch can take longer than PinnedTTL: the server
		// must hear from this instance meanwhile.
		c.keepPin(p)
	}
	select {
	case c.parts[p].ch <- msg:
		c.wake()
		return true
	default:
	}
	keep := time.NewTicker(c.pullWait())
	defer keep.Stop()
	for {
		select {
		case c.parts[p].ch <- msg:
			c.wake()
			return true
		case <-ctx.Done():
			return false
		case <-keep.C:
			c.keepPin(p)
		}
	}
}

// wake tells a waiting Fetch that a partition's state changed.
func (c *Consumer) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// keepPin sends a pull of partition p with this instance's pin id that can
// deliver nothing (max bytes 1: the server answers 409 to a message, or lets
// it expire): it resets the server's PinnedTTL timer. It does not wait for
// the answer.
func (c *Consumer) keepPin(p int) {
	c.parts[p].pulled.Store(time.Now().UnixNano())
	b, err := c.cons[p].Fetch(1, jetstream.FetchMaxBytes(1), jetstream.FetchMaxWait(c.pullWait()), jetstream.FetchPriorityGroup(schemas.ScorerGroup))
	if err != nil {
		return
	}
	go func() {
		for m := range b.Messages() {
			// None should fit in 1 byte; one that came anyway is given
			// back at once rather than left to the ack wait.
			c.keptBack.Add(1)
			nak(m)
		}
	}()
}

// saw notes msg's position and pin id: a new pin means p is (again) this
// instance's.
func (c *Consumer) saw(p int, msg jetstream.Msg) {
	var seq uint64
	if md, err := msg.Metadata(); err == nil {
		seq = md.Sequence.Stream
		c.parts[p].last.Store(seq)
		c.parts[p].backlog.Store(md.NumPending > 0)
	}
	pin := msg.Headers().Get(PinIDHeader)
	if pin == "" {
		return
	}
	pt := &c.parts[p]
	pt.mu.Lock()
	old := pt.pin
	if old == pin {
		pt.mu.Unlock()
		return
	}
	pt.pin = pin
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
	c.cfg.Owner.Acquired(p, seq)
}

// lose records that p is no longer this instance's, if it was.
func (c *Consumer) lose(p int, why string) {
	if c.disown(p) {
		c.cfg.Log.Info("partition ownership ended", "partition", p, "reason", why)
		c.cfg.Owner.Lost(p)
	}
}

// loseIf is lose if p's pin is still pin.
func (c *Consumer) loseIf(p int, pin, why string) {
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
	for len(out) < batch {
		if p := c.next(); p >= 0 {
			out <- c.heads[p]
			c.heads[p] = nil
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
		if c.heads[p] == nil {
			select {
			case m := <-c.parts[p].ch:
				c.heads[p] = m
				c.headSeq[p] = 0
				if md, err := m.Metadata(); err == nil {
					c.headSeq[p] = md.Sequence.Stream
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
			c.check(ctx)
		}
	}
}

// check reads every partition consumer's info once: lag for the metrics,
// the server's pinned id (an instance that thinks it owns a partition pinned
// to another pin has lost it), the instance estimate, and releases.
func (c *Consumer) check(ctx context.Context) {
	n := 0
	owned := 0
	for p, cons := range c.cons {
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
		pinned := ""
		for _, g := range info.PriorityGroups {
			if g.Group == schemas.ScorerGroup {
				pinned = g.PinnedClientID
			}
		}
		if mine == "" {
			continue
		}
		if pinned != mine {
			c.loseIf(p, mine, "the server pins another client or none")
			continue
		}
		owned++
		if releasing && info.NumAckPending == 0 {
			c.release(ctx, p)
		}
	}
	n = c.instances(ctx)
	if c.cfg.Rebalance < 0 || n == 0 {
		c.lastN = 0
		return
	}
	fair := (len(c.cons) + n - 1) / n
	if owned > fair && n == c.lastN && !c.anyReleasing() {
		// The highest partition owned goes first: a newcomer then gets
		// the same share whichever instance gives it up.
		for p := len(c.parts) - 1; p >= 0; p-- {
			if c.owns(p) {
				pt := &c.parts[p]
				pt.mu.Lock()
				pt.releasing = true
				pt.mu.Unlock()
				pt.backlog.Store(false) // no more pulls: none to wait for
				c.cfg.Log.Info("releasing a partition for balance", "partition", p, "owned", owned, "instances", n, "fair_share", fair)
				break
			}
		}
	}
	c.lastN = n
}

// instances rewrites this instance's presence key and counts the keys: the
// live scorers (0 without a Presence bucket, or when it cannot be read).
func (c *Consumer) instances(ctx context.Context) int {
	kv := c.cfg.Presence
	if kv == nil {
		return 0
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := kv.Put(cctx, c.cfg.Instance, nil); err != nil {
		c.cfg.Log.Warn("cannot rewrite this scorer's presence key", "err", err)
		return 0
	}
	keys, err := kv.ListKeys(cctx)
	if err != nil {
		c.cfg.Log.Warn("cannot count the scorers' presence keys", "err", err)
		return 0
	}
	n := 0
	for range keys.Keys() {
		n++
	}
	_ = keys.Stop()
	return n
}

func (c *Consumer) anyReleasing() bool {
	for p := range c.parts {
		pt := &c.parts[p]
		pt.mu.Lock()
		r := pt.releasing
		pt.mu.Unlock()
		if r {
			return true
		}
	}
	return false
}

// release gives up p, whose messages are all acked: it stops counting p as
// its own (Owner.Lost) before it unpins p, so that its view of ownership
// never overlaps the next owner's, and sits p out for two PinnedTTLs so that
// another instance's waiting pull gets it. When the unpin fails, the pin
// ends after PinnedTTL without pulls.
func (c *Consumer) release(ctx context.Context, p int) {
	pt := &c.parts[p]
	pt.mu.Lock()
	pt.until = time.Now().Add(2 * c.cfg.PinnedTTL)
	pt.mu.Unlock()
	c.lose(p, "released for balance")
	if err := c.stream.UnpinConsumer(ctx, schemas.ScorerConsumer(p), schemas.ScorerGroup); err != nil {
		c.cfg.Log.Warn("cannot unpin a partition released for balance; it moves after its pinned TTL", "partition", p, "err", err)
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
	fmt.Fprintf(w, "# HELP %s Messages of each partition not yet delivered to a scorer.\n# TYPE %s gauge\n", schemas.MetricPartitionPending, schemas.MetricPartitionPending)
	for p := range c.parts {
		fmt.Fprintf(w, "%s{partition=\"%s\"} %d\n", schemas.MetricPartitionPending, strconv.Itoa(p), c.parts[p].pending.Load())
	}
}
