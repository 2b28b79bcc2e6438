package cluster_test

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/schemas"
)

// wmEvent is one request of the watermark test's fleet.
type wmEvent struct {
	device int
	cmd    string
	at     int64
}

// diagnosticsFleet is 24 thermostats of one class reporting their state
// every minute for three hours; at 01:00 four devices of partition 0 (of
// 2) read their diagnostics for the first time, and at 02:00 the probe, a
// device of partition 1, does. One instance judging them in event order
// knows, at 02:00, that four others of the class issued it: new_command.
// It returns the events of each partition, in event time order, and the
// probe device.
func diagnosticsFleet(t *testing.T) (byPart [2][]wmEvent, probe int) {
	t.Helper()
	const devices = 24
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano()
	var in [2][]int
	for i := range devices {
		in[wmPartition(i)] = append(in[wmPartition(i)], i)
	}
	if len(in[0]) < 5 || len(in[1]) < 2 {
		t.Fatalf("partitions of %d and %d devices: too few for the test", len(in[0]), len(in[1]))
	}
	for m := range 180 {
		for i := range devices {
			byPart[wmPartition(i)] = append(byPart[wmPartition(i)], wmEvent{i, "POST /v2/devices/{id}/state", t0 + int64(m)*60e9 + int64(i)*1e9})
		}
	}
	for k, i := range in[0][:4] {
		byPart[0] = append(byPart[0], wmEvent{i, "GET /v2/devices/{id}/diagnostics", t0 + 60*60e9 + 30e9 + int64(k)*1e9})
	}
	probe = in[1][0]
	byPart[1] = append(byPart[1], wmEvent{probe, "GET /v2/devices/{id}/diagnostics", t0 + 120*60e9 + 30e9})
	for p := range byPart {
		slices.SortStableFunc(byPart[p], func(a, b wmEvent) int { return int(a.at - b.at) })
	}
	return byPart, probe
}

func wmPartition(i int) int {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("th-%d", i)))
	return schemas.PartitionOf(ev.DeviceAlt, 2)
}

// process judges e on s and returns its command finding, if any.
func (s *scorer) process(e wmEvent) schemas.Finding {
	var ev schemas.Event
	var sc schemas.Scored
	ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("th-%d", e.device)))
	ev.SetClass([]byte("thermostat/x"))
	ev.SetCommand([]byte(e.cmd))
	ev.Country, ev.ASN = schemas.Country{'D', 'E'}, 3320
	ev.ClientIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + e.device)})
	ev.Time = e.at
	ev.ID = uint64(e.at) ^ uint64(e.device)<<48
	s.stack.Workers[0].Process(&ev, &sc)
	for _, f := range sc.Findings[:sc.N] {
		if f.Detector == command.Name {
			return f
		}
	}
	return schemas.Finding{}
}

// drive judges evs on s in order as the pipeline's ingest loop does with a
// ClassGate (pipeline/classgate.go): before each event but the first it
// holds while the latest event time judged is not before the gate's limit,
// and it reports
// what it learned after each; gate nil judges at once. It returns the
// finding of probe's diagnostics request.
func drive(ctx context.Context, s *scorer, gate *cluster.ClassSync, evs []wmEvent, probe int) schemas.Finding {
	last := int64(math.MinInt64)
	var got schemas.Finding
	for _, e := range evs {
		for gate != nil && ctx.Err() == nil {
			if limit, open := gate.Limit(); open || last == math.MinInt64 || last < limit {
				break
			}
			gate.Hold(ctx, 5*time.Millisecond)
		}
		f := s.process(e)
		if e.device == probe && e.cmd != "POST /v2/devices/{id}/state" {
			got = f
		}
		last = max(last, e.at)
		if gate != nil {
			gate.Learned(last, false)
		}
	}
	if gate != nil {
		gate.Learned(last, true) // nothing pending: covers the clock's time
	}
	return got
}

// TestWatermarkJudgesAsOneInstance: two scorers, each owning one of two
// partitions, judge a class-dependent finding (a command four devices of
// the other partition issued an hour before the probe) as one instance
// does only when the probe's scorer waits until the merged view covers
// the probe's event time. Without the watermark, a scorer ahead of the
// other in event time (here: all its events before the other starts,
// the extreme of a replay) judges the probe with none of the other's
// learning: new_class_command instead of new_command.
func TestWatermarkJudgesAsOneInstance(t *testing.T) {
	byPart, probe := diagnosticsFleet(t)
	all := slices.Concat(byPart[0], byPart[1])
	slices.SortStableFunc(all, func(a, b wmEvent) int { return int(a.at - b.at) })
	want := drive(context.Background(), newScorer(t, nil), nil, all, probe)
	if want.Reason != command.ReasonNewCommand {
		t.Fatalf("one instance judged the probe %q (%.2f), want %q: the scenario does not test the class view",
			want.Reason, want.Score, command.ReasonNewCommand)
	}

	// Without the watermark: partition 1's scorer runs ahead.
	if got := drive(context.Background(), newScorer(t, nil), nil, byPart[1], probe); got.Reason == want.Reason {
		t.Fatalf("without the other partition's learning the probe was judged %q as one instance: the scenario does not depend on the view", got.Reason)
	}

	// With it: both run at once, each as fast as it can; the one ahead
	// holds until the other's published watermark covers its events.
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	scorers := []*scorer{newScorer(t, nil), newScorer(t, nil)}
	gates := make([]*cluster.ClassSync, 2)
	for p := range gates {
		owned := []int{p}
		g, err := cluster.NewClassSync(scorers[p].stack.Model, cluster.ClassSyncConfig{Store: classStore(t, env),
			Instance: fmt.Sprintf("scorer-%d", p), Interval: time.Hour, Partitions: 2,
			Owned: func() []int { return owned }, Lag: 5 * time.Minute, Stall: hangBound})
		if err != nil {
			t.Fatal(err)
		}
		gates[p] = g
		rctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { g.Run(rctx); close(done) }()
		t.Cleanup(func() { stop(); <-done })
	}
	var wg sync.WaitGroup
	var got schemas.Finding
	// Partition 1's scorer starts first, with a head start of its whole
	// backlog queued: it must wait for partition 0's.
	wg.Add(2)
	go func() { defer wg.Done(); got = drive(ctx, scorers[1], gates[1], byPart[1], probe) }()
	go func() { defer wg.Done(); drive(ctx, scorers[0], gates[0], byPart[0], probe) }()
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatalf("the scorers did not finish within %v", hangBound)
	}
	if got.Reason != want.Reason || got.Observed != want.Observed || got.Score != want.Score {
		t.Errorf("with the watermark the probe was judged %q (%.2f, %v others), want one instance's %q (%.2f, %v others)",
			got.Reason, got.Score, got.Observed, want.Reason, want.Score, want.Observed)
	}
	st := gates[1].Stats()
	if st.Stalls != 0 {
		t.Errorf("partition 1's scorer ignored %d stalled partitions: the test's hold bound was reached", st.Stalls)
	}
	t.Logf("probe judged %q (%.2f, %v others); partition 1's sync: %d rounds, watermark %v, limit %v",
		got.Reason, got.Score, got.Observed, st.Rounds, time.Unix(0, st.Watermark).UTC(), time.Unix(0, st.Limit).UTC())
}

// TestWatermarkStalledPartitionIsIgnored: a partition whose owner died
// holds the others back until its coverage stays unchanged for Stall, then
// no longer (counted); a new owner's claim makes it count again, at the
// new owner's watermark.
func TestWatermarkStalledPartitionIsIgnored(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	clock := time.Now()
	now := func() time.Time { return clock }
	mk := func(name string, owned ...int) *cluster.ClassSync {
		g, err := cluster.NewClassSync(newScorer(t, nil).stack.Model, cluster.ClassSyncConfig{Store: classStore(t, env),
			Instance: name, Interval: time.Hour, Partitions: 2, Owned: func() []int { return owned },
			Lag: time.Minute, Stall: time.Minute, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC).UnixNano()
	dead, live := mk("dead", 1), mk("live", 0)
	dead.Learned(t0, false)
	if err := dead.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if limit, open := live.Limit(); open || limit != t0+int64(time.Minute) {
		t.Fatalf("with partition 1 covered to %v: limit %v (open %v), want the coverage plus the lag",
			time.Unix(0, t0).UTC(), time.Unix(0, limit).UTC(), open)
	}
	clock = clock.Add(2 * time.Minute) // the dead instance published nothing since
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, open := live.Limit(); !open {
		t.Fatal("a partition unchanged for longer than Stall still holds events back")
	}
	if st := live.Stats(); st.Stalls != 1 {
		t.Errorf("stalls %d, want 1", st.Stalls)
	}
	// A new owner claims partition 1 at a later watermark.
	heir := mk("heir", 1)
	heir.Learned(t0+int64(time.Hour), false)
	if err := heir.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if limit, open := live.Limit(); open || limit != t0+int64(time.Hour+time.Minute) {
		t.Errorf("after the new owner's claim: limit %v (open %v), want its watermark plus the lag",
			time.Unix(0, limit).UTC(), open)
	}
}

// TestWatermarkAwaitedPartitionHolds: a partition whose coverage stalled
// while its claimer is alive (busy in a takeover during a stream leader's
// election, 58 s in a TestClusterKills run, bench/RESULTS.md w4) keeps
// holding events back past Stall while Awaited says so, for Await in all;
// ignored after Stall, it let another instance judge events two hours of
// event time ahead of what the partition covered.
func TestWatermarkAwaitedPartitionHolds(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	clock := time.Now()
	now := func() time.Time { return clock }
	alive := map[string]bool{"busy": true}
	var asked []string
	awaited := func(_ context.Context, p int, claimer string) bool {
		asked = append(asked, fmt.Sprintf("%d:%s", p, claimer))
		return alive[claimer]
	}
	mk := func(name string, owned ...int) *cluster.ClassSync {
		g, err := cluster.NewClassSync(newScorer(t, nil).stack.Model, cluster.ClassSyncConfig{Store: classStore(t, env),
			Instance: name, Interval: time.Hour, Partitions: 2, Owned: func() []int { return owned },
			Lag: time.Minute, Stall: time.Minute, Awaited: awaited, Await: 5 * time.Minute, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	t0 := time.Date(2026, 1, 5, 2, 0, 0, 0, time.UTC).UnixNano()
	busy, live := mk("busy", 1), mk("live", 0)
	busy.Learned(t0, false)
	if err := busy.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	held := func(when string) {
		t.Helper()
		if err := live.Merge(ctx); err != nil {
			t.Fatal(err)
		}
		if limit, open := live.Limit(); open || limit != t0+int64(time.Minute) {
			t.Fatalf("%s: limit %v (open %v), want partition 1's coverage plus the lag (%v)", when,
				time.Unix(0, limit).UTC(), open, time.Unix(0, t0+int64(time.Minute)).UTC())
		}
		if st := live.Stats(); st.Stalls != 0 {
			t.Fatalf("%s: %d stalls, want none", when, st.Stalls)
		}
	}
	held("before Stall")
	if len(asked) != 0 {
		t.Errorf("Awaited asked %q before the coverage stalled", asked)
	}
	clock = clock.Add(2 * time.Minute) // past Stall: busy published nothing since
	held("past Stall, its claimer alive")
	if want := []string{"1:busy"}; !slices.Equal(asked, want) {
		t.Errorf("Awaited asked %q, want %q", asked, want)
	}
	clock = clock.Add(4 * time.Minute) // past Await
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, open := live.Limit(); !open {
		t.Fatal("a partition awaited for longer than Await still holds events back")
	}
	if st := live.Stats(); st.Stalls != 1 {
		t.Errorf("stalls %d, want 1", st.Stalls)
	}
	// Its claimer dead: ignored after Stall, as without Awaited.
	busy.Learned(t0+int64(time.Minute), false)
	if err := busy.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, open := live.Limit(); open {
		t.Fatal("a partition whose coverage moved is still ignored")
	}
	alive["busy"] = false
	clock = clock.Add(2 * time.Minute)
	if err := live.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, open := live.Limit(); !open {
		t.Fatal("a dead claimer's partition, not awaited, still holds events back past Stall")
	}
}

// TestWatermarkIdleClaimInReplay: an instance with nothing pending claims
// the clock's time only when the events are live. In a replay (events
// hours behind the clock) it claims the highest coverage it merged from
// the others, or what it learned: claiming the clock's time, it let the
// others judge without bound (at the start of a replay every instance is
// idle: lock-000006's unlock judged with the view 35-47 min behind in 6 of
// 13 TestClusterKills runs, bench/RESULTS.md w4).
func TestWatermarkIdleClaimInReplay(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	clock := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	store := classStore(t, env)
	mk := func(name string, owned ...int) *cluster.ClassSync {
		g, err := cluster.NewClassSync(newScorer(t, nil).stack.Model, cluster.ClassSyncConfig{Store: store,
			Instance: name, Interval: time.Hour, Partitions: 2, Owned: func() []int { return owned },
			Lag: time.Minute, Stall: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	at := func(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }
	limitOf := func(g *cluster.ClassSync) (int64, bool) {
		t.Helper()
		if err := g.Merge(ctx); err != nil {
			t.Fatal(err)
		}
		return g.Limit()
	}
	publish := func(g *cluster.ClassSync) {
		t.Helper()
		if err := g.Publish(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// A replay of 2026-01-05: both instances start idle.
	t0 := time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	busy, idle := mk("busy", 0), mk("idle", 1)
	idle.Learned(math.MinInt64, true)
	publish(idle)
	busy.Learned(t0, false) // its first event
	publish(busy)
	if limit, open := limitOf(busy); open || limit > t0+int64(time.Minute) {
		t.Fatalf("an idle instance's claim in a replay let the other judge up to %s (open %v), want at most its first event plus the lag (%s)",
			at(limit), open, at(t0+int64(time.Minute)))
	}
	// The idle instance follows the others' coverage (merge, then publish).
	t1 := t0 + int64(30*time.Minute)
	busy.Learned(t1, false)
	publish(busy)
	if err := idle.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	idle.Learned(math.MinInt64, true)
	publish(idle)
	if limit, open := limitOf(busy); open || limit != t1+int64(time.Minute) {
		t.Errorf("after the idle instance merged the other's %s: limit %s (open %v), want it plus the lag (%s)",
			at(t1), at(limit), open, at(t1+int64(time.Minute)))
	}

	// Live events (event time about the clock's): idle claims the clock.
	liveBusy, liveIdle := mk("live-busy", 0), mk("live-idle", 1)
	liveIdle.Learned(clock.Add(-5*time.Second).UnixNano(), true)
	publish(liveIdle)
	liveBusy.Learned(clock.Add(-2*time.Second).UnixNano(), false)
	publish(liveBusy)
	if limit, open := limitOf(liveBusy); open || limit != clock.Add(time.Minute).UnixNano() {
		t.Errorf("live: limit %s (open %v), want the idle instance's clock claim plus the lag (%s)",
			at(limit), open, at(clock.Add(time.Minute).UnixNano()))
	}
}
