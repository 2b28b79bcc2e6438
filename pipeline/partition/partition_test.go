package partition_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/schemas"
)

// startPartitions starts an embedded server with the 8 event partitions'
// consumers (pinned TTL pinnedTTL; AckWait ackWait, or the default for 0).
func startPartitions(t *testing.T, pinnedTTL, ackWait time.Duration) *natstest.Env {
	t.Helper()
	return startPartitionsN(t, 8, pinnedTTL, ackWait)
}

// startPartitionsN is startPartitions with parts partitions.
func startPartitionsN(t *testing.T, parts int, pinnedTTL, ackWait time.Duration) *natstest.Env {
	t.Helper()
	env := natstest.Start(t, natsserver.Options{})
	scfg := bus.DefaultStreamsConfig()
	if ackWait > 0 {
		scfg.AckWait = ackWait
	}
	if _, _, _, err := bus.EnsurePartitions(context.Background(), env.JS, scfg, parts, pinnedTTL); err != nil {
		t.Fatal(err)
	}
	return env
}

// publishEvery publishes one event per partition of 8 every 20 ms until
// stop, which waits for the last publish; published counts the events.
func publishEvery(t *testing.T, js jetstream.JetStream) (published *atomic.Int64, stop func()) {
	return publishEveryN(t, js, 8)
}

// publishEveryN is publishEvery over parts partitions.
func publishEveryN(t *testing.T, js jetstream.JetStream, parts int) (published *atomic.Int64, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	published = &atomic.Int64{}
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			for p := range parts {
				id := fmt.Sprintf("e-%d-%d", p, i)
				if _, err := js.Publish(context.Background(), schemas.EventsSubject(p), []byte(id), jetstream.WithMsgID(id)); err != nil {
					t.Error(err)
					return
				}
				published.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return published, func() { cancel(); <-done }
}

// scored is one message a scorer acked: its results durable.
type scored struct {
	id     string
	p      int
	seq    uint64
	scorer string
}

// results is what both scorers acked, shared.
type results struct {
	mu  sync.Mutex
	all []scored
	// judged is every message a scorer processed before its ack (what a
	// pipeline scores), fenced the acks refused by the fence.
	judged  []scored
	fenced  int
	ackErrs int   // acks not confirmed
	lastErr error // the last of them
}

func (r *results) add(s scored) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
}

func (r *results) snapshot() []scored {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// scorer is a scorer instance of its own connection: a partition.Consumer
// and a loop that fetches, records and acks, as the pipeline does once a
// message's results are durable.
type scorer struct {
	// stallAt takes a function the loop calls with the next message in
	// hand: a test's stall of the whole scorer (partition.Stall).
	stallAt chan func()
	name    string
	c       *partition.Consumer
	cancel  context.CancelFunc
	done    chan struct{}
	close   func()
}

func startScorer(t *testing.T, url, name string, res *results, cfg partition.Config) *scorer {
	t.Helper()
	return startScorerN(t, 8, url, name, res, cfg)
}

// startScorerN is startScorer over parts partitions. cfg.Log, when set, is
// kept (a test that logs ownership changes).
func startScorerN(t *testing.T, parts int, url, name string, res *results, cfg partition.Config) *scorer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nc, js, err := bus.Connect(ctx, url, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	cons := make([]jetstream.Consumer, parts)
	for p := range cons {
		if cons[p], err = js.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p)); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := js.Stream(ctx, schemas.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Presence, err = js.KeyValue(ctx, schemas.KVScorers); err != nil {
		t.Fatal(err)
	}
	if cfg.Log == nil {
		cfg.Log = testLog(t, name)
	}
	c, err := partition.New(ctx, stream, cons, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &scorer{stallAt: make(chan func(), 1), name: name, c: c, cancel: cancel, done: make(chan struct{}), close: nc.Close}
	go func() {
		defer close(s.done)
		for ctx.Err() == nil {
			b, _ := c.Fetch(32)
			for m := range b.Messages() {
				select {
				case hold := <-s.stallAt:
					hold()
				default:
				}
				md, err := m.Metadata()
				if err != nil {
					t.Error(err)
					continue
				}
				var p int
				fmt.Sscanf(m.Subject(), schemas.SubjectEventsPrefix+".%d", &p)
				if ctx.Err() != nil {
					continue // crashed: in-flight messages are never acked
				}
				res.mu.Lock()
				res.judged = append(res.judged, scored{id: string(m.Data()), p: p, seq: md.Sequence.Stream, scorer: name})
				res.mu.Unlock()
				// Not ctx: an ack sent is waited for, as a process alive at
				// that point would.
				if err := m.DoubleAck(context.Background()); errors.Is(err, partition.ErrFenced) {
					res.mu.Lock()
					res.fenced++
					res.mu.Unlock()
					continue // given back to the partition's next owner
				} else if err != nil {
					res.mu.Lock()
					res.ackErrs++
					res.lastErr = err
					res.mu.Unlock()
					continue // not durable: it will be redelivered
				}
				res.add(scored{id: string(m.Data()), p: p, seq: md.Sequence.Stream, scorer: name})
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-s.done
		nc.Close()
	})
	return s
}

// testStart is when this process's tests started (the time testLog shows).
var testStart = time.Now()

// testLog is a scorer's log: discarded unless IOTWATCH_PARTITION_LOG=1,
// then written to the test's log with the time since the tests started
// and the scorer's name (ownership changes, releases and their reasons).
func testLog(t *testing.T, name string) *slog.Logger {
	if os.Getenv("IOTWATCH_PARTITION_LOG") != "1" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(logWriter(func(line string) {
		t.Logf("%7.2fs %s: %s", time.Since(testStart).Seconds(), name, strings.TrimSpace(line))
	}), &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
}

// logWriter is an io.Writer calling its function with each write (a slog
// handler writes one record per call).
type logWriter func(string)

func (w logWriter) Write(b []byte) (int, error) { w(string(b)); return len(b), nil }

// crash ends the scorer as kill -9 would: no ack of what it holds, no nak,
// no unpin, its connection gone.
func (s *scorer) crash() {
	s.cancel()
	<-s.done
	s.close()
}

// TestTwoScorersOwnPartitions runs two scorers over 8 partitions while
// events keep arriving: every partition is owned by one scorer at a time (no
// event acked by both; the two Owned sets never overlap), both own some, and
// when one crashes the other owns all 8 within PinnedTTL plus a pull expiry
// (and a publish interval), and every event published is acked by one of
// them (the crashed one's unacked messages after the ack wait).
func TestTwoScorersOwnPartitions(t *testing.T) {
	const pinnedTTL, ackWait = time.Second, 3 * time.Second
	env := startPartitions(t, pinnedTTL, ackWait)

	// A publisher: one event per partition every 20 ms until stopped.
	published, stopPub := publishEvery(t, env.JS)
	defer stopPub()

	res := &results{}
	cfg := partition.Config{PinnedTTL: pinnedTTL}
	a := startScorer(t, env.Server.URL(), "a", res, cfg)
	b := startScorer(t, env.Server.URL(), "b", res, cfg)

	// Owned sets sampled every 5 ms never overlap (until a crashes).
	var aCrashed atomic.Bool
	sampleCtx, stopSample := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		// a, b, a and b, a, b: a partition in the middle sample and in
		// both around it was owned by both at once.
		both := func(x1, y, x2 []int, xn, yn string) {
			for _, p := range y {
				if slices.Contains(x1, p) && slices.Contains(x2, p) {
					t.Errorf("partition %d owned by both: %s %v then %s %v then %s %v", p, xn, x1, yn, y, xn, x2)
				}
			}
		}
		for sampleCtx.Err() == nil && !aCrashed.Load() {
			oa1, ob, oa2 := a.c.Owned(), b.c.Owned(), a.c.Owned()
			both(oa1, ob, oa2, "a", "b")
			ob1, oa, ob2 := ob, oa2, b.c.Owned()
			both(ob1, oa, ob2, "b", "a")
			time.Sleep(5 * time.Millisecond) // a sampling period, not a wait for work
		}
	}()

	// Balance: each gets 4 (one release per rebalance interval).
	deadline := time.Now().Add(2 * time.Minute)
	for len(a.c.Owned()) != 4 || len(b.c.Owned()) != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("not balanced: a owns %v, b owns %v", a.c.Owned(), b.c.Owned())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	t.Logf("balanced: a owns %v, b owns %v", a.c.Owned(), b.c.Owned())

	// Crash a; b takes all 8 over.
	aCrashed.Store(true) // a crashed instance's view is frozen: it is not sampled after
	<-sampled
	crashed := time.Now()
	a.crash()
	for len(b.c.Owned()) != 8 {
		if time.Now().After(crashed.Add(2 * time.Minute)) {
			t.Fatalf("b owns %v two minutes after a crashed", b.c.Owned())
		}
		time.Sleep(5 * time.Millisecond) // polling a condition
	}
	takeover := time.Since(crashed)
	t.Logf("b owns all 8 partitions %.2f s after a crashed (pinned TTL %s, pull expiry %s)", takeover.Seconds(), pinnedTTL, pinnedTTL/3)

	// A little more traffic, then every event published must be acked once.
	time.Sleep(200 * time.Millisecond) // traffic after the takeover, not a wait for a result
	stopPub()
	want := int(published.Load())
	deadline = time.Now().Add(2 * time.Minute)
	for {
		got := res.snapshot()
		if len(got) >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acked two minutes after the last publish", len(got), want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	stopSample()
	t.Logf("every event acked %.2f s after a crashed (ack wait %s: its unacked messages are redelivered then)", time.Since(crashed).Seconds(), ackWait)

	got := res.snapshot()
	byID := map[string][]string{}
	perScorer := map[string]int{}
	for _, s := range got {
		byID[s.id] = append(byID[s.id], s.scorer)
		perScorer[s.scorer]++
	}
	if len(byID) != want || len(got) != want {
		t.Errorf("%d distinct events acked (%d acks), %d published", len(byID), len(got), want)
	}
	for id, by := range byID {
		if len(by) > 1 {
			t.Errorf("event %s scored by %v", id, by)
		}
	}
	if perScorer["a"] == 0 || perScorer["b"] == 0 {
		t.Errorf("events scored: %v; want both", perScorer)
	}
	// Within a partition, ownership is a few contiguous runs of stream
	// order: each switch is an ownership change (the release that balanced
	// them, the crash), not interleaving.
	switches := 0
	for p := range 8 {
		var ps []scored
		for _, s := range got {
			if s.p == p {
				ps = append(ps, s)
			}
		}
		slices.SortFunc(ps, func(x, y scored) int { return int(x.seq) - int(y.seq) })
		runs := ""
		for i := 1; i < len(ps); i++ {
			if ps[i].scorer != ps[i-1].scorer {
				switches++
				runs += fmt.Sprintf(" %s..%d|%s %d..", ps[i-1].scorer, ps[i-1].seq, ps[i].scorer, ps[i].seq)
			}
		}
		if strings.Count(runs, "|") > 2 {
			t.Logf("partition %d: %d events, changes of scorer at:%s", p, len(ps), runs)
		}
	}
	// More changes mean a partition's messages were handed on out of
	// stream order (two pulls of one instance waiting at once: the server
	// serves them in turn), and a crash left gaps in what a acked.
	if switches > 8+4 {
		t.Errorf("%d changes of scorer along the partitions' stream order; at most 12 ownership changes happened", switches)
	}
	t.Logf("%d events: a acked %d, b %d; %d changes of scorer along stream order; keep-alive pulls received %d and %d; %d acks not confirmed (%v)",
		want, perScorer["a"], perScorer["b"], switches, a.c.KeptBack(), b.c.KeptBack(), res.ackErrs, res.lastErr)
}

// TestStaticAssignment: two scorers told which partitions to pull
// (Config.Only) own exactly those, release none for balance, and together
// ack every event once; a partition neither lists is not read.
func TestStaticAssignment(t *testing.T) {
	const pinnedTTL = 2 * time.Second
	env := startPartitions(t, pinnedTTL, 0)
	res := &results{}
	a := startScorer(t, env.Server.URL(), "a", res, partition.Config{PinnedTTL: pinnedTTL, Rebalance: 100 * time.Millisecond, Only: []int{0, 1, 2}})
	b := startScorer(t, env.Server.URL(), "b", res, partition.Config{PinnedTTL: pinnedTTL, Rebalance: 100 * time.Millisecond, Only: []int{3, 4, 5, 6}})
	want := 0
	for i := range 40 {
		for p := range 8 {
			id := fmt.Sprintf("e-%d-%d", p, i)
			if _, err := env.JS.Publish(context.Background(), schemas.EventsSubject(p), []byte(id), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			if p != 7 {
				want++
			}
		}
	}
	deadline := time.Now().Add(2 * time.Minute) // a hang bound
	for len(res.snapshot()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acked", len(res.snapshot()), want)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	// Several rebalance intervals: an instance owning more than its share
	// (4 of 8 with two instances) would release one by now.
	for range 10 {
		if oa := a.c.Owned(); len(oa) > 0 && !slices.Equal(oa, []int{0, 1, 2}) {
			t.Fatalf("a owns %v, told to pull 0-2", oa)
		}
		if ob := b.c.Owned(); len(ob) > 0 && !slices.Equal(ob, []int{3, 4, 5, 6}) {
			t.Fatalf("b owns %v, told to pull 3-6", ob)
		}
		time.Sleep(100 * time.Millisecond) // sampling over rebalance intervals
	}
	got := res.snapshot()
	seen := map[string]string{}
	for _, s := range got {
		if other, ok := seen[s.id]; ok {
			t.Errorf("event %s acked by %s and %s", s.id, other, s.scorer)
		}
		seen[s.id] = s.scorer
		if s.p == 7 {
			t.Errorf("event %s of partition 7, which no scorer lists, acked by %s", s.id, s.scorer)
		}
		if wantBy := map[bool]string{true: "a", false: "b"}[s.p <= 2]; s.scorer != wantBy {
			t.Errorf("event %s of partition %d acked by %s", s.id, s.p, s.scorer)
		}
	}
	if len(seen) != want {
		t.Errorf("%d distinct events acked, want %d", len(seen), want)
	}
}

// TestReleaseAfterACrash: a crashes holding messages of every partition
// (taken from the server, never acked) while events keep arriving; b takes
// the 8 partitions over; c joins and b releases one for balance. The
// crashed owner's messages stay pending at the server until their AckWait
// and are then redelivered only to a pull of the pinned instance: a release
// that stopped pulling until nothing was pending waited for ever, and the
// partition was never scored again. Every event must be acked. (Where the
// partitions end up is logged, not asserted.)
func TestReleaseAfterACrash(t *testing.T) {
	const pinnedTTL = time.Second
	env := startPartitions(t, pinnedTTL, 15*time.Second) // longer than b's take-over and first release
	published, stopPub := publishEvery(t, env.JS)
	defer stopPub()

	res := &results{}
	cfg := partition.Config{PinnedTTL: pinnedTTL}
	a := startScorer(t, env.Server.URL(), "a", res, cfg)
	held := make(chan struct{})
	release := make(chan struct{})
	a.stallAt <- func() { close(held); <-release }
	<-held // a holds a batch, its partitions' next messages pulled behind it
	b := startScorer(t, env.Server.URL(), "b", res, cfg)
	a.cancel() // crash: what a holds is never acked
	close(release)
	<-a.done
	a.close()
	for took := time.Now(); len(b.c.Owned()) != 8; {
		if time.Since(took) > 3*time.Minute { // a hang bound, not a speed
			t.Fatalf("b owns %v three minutes after a crashed\n%s", b.c.Owned(), b.c.State())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	c := startScorer(t, env.Server.URL(), "c", res, cfg)
	// b releases a partition within a few rebalance intervals of c's
	// arrival, long before a's messages are due for redelivery.
	joined := time.Now()
	for len(b.c.Owned()) == 8 && len(c.c.Owned()) == 0 && time.Since(joined) < 2*time.Minute {
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	t.Logf("c owns %v %.2f s after it joined (b %v)", c.c.Owned(), time.Since(joined).Seconds(), b.c.Owned())
	stopPub()

	want := int(published.Load())
	deadline := time.Now().Add(3 * time.Minute)
	for {
		byID := map[string]bool{}
		for _, s := range res.snapshot() {
			byID[s.id] = true
		}
		if len(byID) == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acked three minutes after the last publish; b owns %v, c %v\nb:\n%s", len(byID), want, b.c.Owned(), c.c.Owned(), b.c.State())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
	t.Logf("every event acked; b owns %v, c %v", b.c.Owned(), c.c.Owned())
}

// slowOwner is an Owner whose Acquired takes hold (a restore and catch-up
// of a large partition) and counts the partitions lost.
type slowOwner struct {
	hold time.Duration
	lost atomic.Int64
}

func (o *slowOwner) Acquired(int, uint64) { time.Sleep(o.hold) } // the restore's work
func (o *slowOwner) Lost(int)             { o.lost.Add(1) }

// TestSlowAcquiredKeepsPin: an Owner.Acquired (the new owner's restore and
// catch-up) that takes three pinned TTLs does not cost the partitions: the
// instance keeps its pins meanwhile, so it is not fenced off before it
// hands on the first message, and every message is acked once. (Without
// keep-alives during the hook, the lease ended in it: every partition was
// fenced off, lost and acquired, restored, again.)
func TestSlowAcquiredKeepsPin(t *testing.T) {
	// 3 s, not 1: keep-alives go every PinnedTTL/3, and a race-instrumented
	// run at load 20 (two cores shared by ten processes) delayed one past a
	// 1 s TTL: the test is about keep-alives during the hook, not about how
	// late a starved goroutine may run.
	const pinnedTTL = 3 * time.Second
	env := startPartitions(t, pinnedTTL, 30*time.Second)
	want := 0
	for p := range 8 {
		for i := range 5 {
			id := fmt.Sprintf("e-%d-%d", p, i)
			if _, err := env.JS.Publish(context.Background(), schemas.EventsSubject(p), []byte(id), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			want++
		}
	}
	res := &results{}
	owner := &slowOwner{hold: 3 * pinnedTTL}
	s := startScorer(t, env.Server.URL(), "a", res, partition.Config{PinnedTTL: pinnedTTL, Owner: owner, Rebalance: -1})
	deadline := time.Now().Add(2 * time.Minute) // a hang bound
	for len(res.snapshot()) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages acked; owns %v\n%s", len(res.snapshot()), want, s.c.Owned(), s.c.State())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	_, fences := s.c.Fenced()
	if fences != 0 || owner.lost.Load() != 0 {
		t.Errorf("fenced off %d times, %d partitions lost while their restore ran (want none)", fences, owner.lost.Load())
	}
	if got := len(res.snapshot()); got != want {
		t.Errorf("%d acks, want %d (each message once)", got, want)
	}
}

// TestAwaited: Awaited (the class view's question about a partition whose
// coverage stalled, pipeline/cluster.ClassSync) says true while the
// partition's claimer is alive (its presence key read) or the partition
// has a pinned client or messages pending, false once its claimer crashed,
// its key expired and nothing is left: a dead owner's idle partition.
func TestAwaited(t *testing.T) {
	const pinnedTTL = 2 * time.Second // a's presence key expires after two
	env := startPartitionsN(t, 2, pinnedTTL, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a hang bound
	defer cancel()
	res := &results{}
	cfg := partition.Config{PinnedTTL: pinnedTTL, Instance: "a"}
	a := startScorerN(t, 2, env.Server.URL(), "a", res, cfg)
	for p := range 2 {
		id := fmt.Sprint("e-", p)
		if _, err := env.JS.Publish(ctx, schemas.EventsSubject(p), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	for len(res.snapshot()) < 2 || len(a.c.Owned()) < 2 {
		if ctx.Err() != nil {
			t.Fatalf("a acked %d of 2 events, owns %v", len(res.snapshot()), a.c.Owned())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
	if !a.c.Awaited(ctx, 0, "") {
		t.Error("a partition with a pinned client (a) is not awaited")
	}
	// o observes; it owns nothing (nothing pending to pin it).
	cfg.Instance = "o"
	o := startScorerN(t, 2, env.Server.URL(), "o", res, cfg)
	a.crash()
	if !o.c.Awaited(ctx, 0, "a") {
		t.Fatal("the partition of a crashed instance, pinned to it and its presence key still there, is not awaited")
	}
	for o.c.Awaited(ctx, 0, "a") {
		if ctx.Err() != nil {
			t.Fatal("a dead claimer's partition with no pin and nothing pending is still awaited")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition: a's key expires, its pin ends
	}
	// Nothing pinned or pending: only a live claimer's presence says wait.
	if !o.c.Awaited(ctx, 1, "o") {
		t.Error("a partition whose claimer is alive (o's presence key) is not awaited")
	}
	// A message pending for partition 0: o's waiting pull takes it over.
	if _, err := env.JS.Publish(ctx, schemas.EventsSubject(0), []byte("e-2"), jetstream.WithMsgID("e-2")); err != nil {
		t.Fatal(err)
	}
	if !o.c.Awaited(ctx, 0, "a") {
		t.Error("a dead claimer's partition with a message pending (or pinned anew) is not awaited")
	}
}
