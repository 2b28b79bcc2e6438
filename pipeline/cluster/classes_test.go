package cluster_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/schemas"
)

// classStore opens the bucket of class contributions on a connection of
// its own to env's server: one per simulated instance.
func classStore(t *testing.T, env *natstest.Env) jetstream.ObjectStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	nc, js, err := bus.Connect(ctx, env.Server.URL(), "iotwatch-instance", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	st, err := bus.EnsureClassStats(ctx, js, bus.StreamsConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// scorer is one instance's scoring stack (the command detector, one
// worker) and the partitions it owns.
type scorer struct {
	stack *score.Stack
	owns  func(p int) bool
}

func newScorer(t *testing.T, owns func(p int) bool) *scorer {
	t.Helper()
	// Small class tables (the live default holds 2^18 commands, 28 MB a
	// contribution): the test's fleet needs few, and -race is slow.
	st, err := score.New(score.Config{Detectors: []string{command.Name}, ClassCommands: 1 << 12, Classes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return &scorer{stack: st, owns: owns}
}

// rollout is a fleet of 40 thermostats, each owned by the scorer of its
// partition (of 2), reporting their state every minute for two hours;
// then adopters of them adopt a firmware report from their homes, spread
// over both partitions, each scorer too few for a rollout on its own. sync
// runs between the adoptions and the probes (the instances' publish and
// merge). It returns the command finding of each probe device's firmware
// report, by device, as its owner scored it.
func rollout(t *testing.T, scorers []*scorer, adopters int, sync func()) map[string]schemas.Finding {
	t.Helper()
	const devices = 40
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano()
	var ev schemas.Event
	var sc schemas.Scored
	send := func(i int, cmd string, at int64) schemas.Finding {
		id := fmt.Sprintf("th-%d", i)
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte(id))
		ev.SetClass([]byte("thermostat/x"))
		ev.SetCommand([]byte(cmd))
		ev.Country, ev.ASN = schemas.Country{'D', 'E'}, 3320
		ev.ClientIP = netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		ev.Time = at
		ev.ID = uint64(at) ^ uint64(i)<<48
		p := schemas.PartitionOf(ev.DeviceAlt, 2)
		for _, s := range scorers {
			if s.owns(p) {
				sc = schemas.Scored{}
				s.stack.Workers[0].Process(&ev, &sc)
				for _, f := range sc.Findings[:sc.N] {
					if f.Detector == command.Name {
						return f
					}
				}
				return schemas.Finding{}
			}
		}
		t.Fatalf("no scorer owns partition %d", p)
		return schemas.Finding{}
	}
	for m := range 120 {
		for i := range devices {
			send(i, "POST /v2/devices/{id}/state", t0+int64(m)*60e9+int64(i)*1e9)
		}
	}
	// The adopters: the first devices of each partition, alternating, so
	// that each scorer sees about half of them.
	part := func(i int) int {
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("th-%d", i)))
		return schemas.PartitionOf(ev.DeviceAlt, 2)
	}
	var byPart [2][]int
	for i := range devices {
		byPart[part(i)] = append(byPart[part(i)], i)
	}
	if len(byPart[0]) < adopters || len(byPart[1]) < adopters {
		t.Fatalf("partitions of %d and %d devices: too few for the test", len(byPart[0]), len(byPart[1]))
	}
	at := t0 + 120*60e9
	for k := range adopters {
		for p := range 2 {
			send(byPart[p][k], "POST /v2/devices/{id}/firmware/report", at)
			at += 1e9
		}
	}
	sync()
	out := map[string]schemas.Finding{}
	for p := range 2 {
		i := byPart[p][adopters] // a device of each partition, after the others
		out[fmt.Sprintf("th-%d", i)] = send(i, "POST /v2/devices/{id}/firmware/report", at)
		at += 1e9
	}
	return out
}

// TestClassMergeRolloutAcrossInstances: a firmware rollout adopted by six
// devices, three in each of two scorers' partitions, is scored as a
// rollout (at most 0.25, as one instance scores it: the golden
// detectors/command/testdata/rollout.txt) on both scorers once each has
// published its class contribution through NATS and merged the other's;
// without the merge each scorer sees three adopters, fewer than
// command.AdoptMin, and scores the report as a privileged command new to
// the device.
func TestClassMergeRolloutAcrossInstances(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	const adopters = 3 // per partition: 6 in all, AdoptMin is 5
	both := func(int) bool { return true }
	one := rollout(t, []*scorer{newScorer(t, both)}, adopters, func() {})

	mine := func(q int) func(int) bool { return func(p int) bool { return p == q } }
	alone := rollout(t, []*scorer{newScorer(t, mine(0)), newScorer(t, mine(1))}, adopters, func() {})

	a, b := newScorer(t, mine(0)), newScorer(t, mine(1))
	var syncs []*cluster.ClassSync
	for i, s := range []*scorer{a, b} {
		cs, err := cluster.NewClassSync(s.stack.Model, cluster.ClassSyncConfig{Store: classStore(t, env), Instance: fmt.Sprintf("scorer-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		syncs = append(syncs, cs)
	}
	merged := rollout(t, []*scorer{a, b}, adopters, func() {
		for _, cs := range syncs {
			if err := cs.Publish(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, cs := range syncs {
			if err := cs.Merge(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
	for dev, f := range one {
		t.Logf("%s: one instance %s %.2f; two merged %s %.2f; two alone %s %.2f", dev, f.Reason, f.Score,
			merged[dev].Reason, merged[dev].Score, alone[dev].Reason, alone[dev].Score)
		if f.Reason == schemas.ReasonNone || f.Score > 0.25 {
			t.Errorf("%s: one instance scores %s %.2f, want a rollout (at most 0.25): the test's fleet is wrong", dev, f.Reason, f.Score)
		}
		if merged[dev] != f {
			t.Errorf("%s: two merged instances score %+v, want what one instance scores, %+v", dev, merged[dev], f)
		}
		if !(alone[dev].Score > 0.25) {
			t.Errorf("%s: two instances without the merge score %s %.2f, want more than 0.25 (the test would pass without the merge)", dev, alone[dev].Reason, alone[dev].Score)
		}
	}
	for i, cs := range syncs {
		st := cs.Stats()
		if st.Merged != 1 || len(st.Ages) != 1 {
			t.Errorf("scorer %d merged %d contributions (ages %v), want the other's", i, st.Merged, st.Ages)
		}
		t.Logf("scorer %d: contribution %d bytes (%d raw), publish %.3fs, merge %.3fs", i, st.PublishedBytes, st.RawBytes, st.PublishSeconds, st.MergeSeconds)
	}
}

// TestClassSyncRunAndExpiry: Run publishes and merges every interval (the
// other's contribution is merged without any call of the test's), and a
// contribution not rewritten within the expiry is dropped: the overlay
// goes and the instance reads its own learning only.
func TestClassSyncRunAndExpiry(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), hangBound)
	defer cancel()
	a, b := newScorer(t, nil), newScorer(t, nil)
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("th-b"))
	ev.SetClass([]byte("thermostat/x"))
	ev.SetCommand([]byte("POST /v2/devices/{id}/state"))
	ev.Time = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano()
	var sc schemas.Scored
	b.stack.Workers[0].Process(&ev, &sc)
	class := ev.ClassKey
	clock := time.Now()
	now := func() time.Time { return clock }
	mk := func(s *scorer, name string) *cluster.ClassSync {
		cs, err := cluster.NewClassSync(s.stack.Model, cluster.ClassSyncConfig{Store: classStore(t, env), Instance: name,
			Interval: 50 * time.Millisecond, Expiry: time.Minute, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	ca, cb := mk(a, "a"), mk(b, "b")
	if err := cb.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.stack.Model.Table.ClassDevices(class); got != 0 {
		t.Fatalf("before any merge, a sees %v devices of b's class", got)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ca.Run(rctx) }()
	for a.stack.Model.Table.ClassDevices(class) == 0 {
		if ctx.Err() != nil {
			t.Fatal("a never merged b's contribution")
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := ca.Stats(); st.Rounds < 1 || st.Merged != 1 {
		t.Errorf("a's stats after merging: %+v", st)
	}
	// An object that does not decode is reported and left out; the others
	// still merge.
	store := classStore(t, env)
	if _, err := store.PutBytes(ctx, "garbage", []byte("not a contribution")); err != nil {
		t.Fatal(err)
	}
	if err := ca.Merge(ctx); err == nil || !strings.Contains(err.Error(), `"garbage"`) {
		t.Errorf("merging a garbage object: error %v, want one naming it", err)
	}
	if st := ca.Stats(); st.Merged != 1 || a.stack.Model.Table.ClassDevices(class) == 0 {
		t.Errorf("with a garbage object: merged %d, want b's alone still merged", st.Merged)
	}
	if err := store.Delete(ctx, "garbage"); err != nil {
		t.Fatal(err)
	}
	// b stops publishing: two minutes on, its contribution has expired.
	clock = clock.Add(2 * time.Minute)
	if err := ca.Merge(ctx); err != nil {
		t.Fatal(err)
	}
	if got := a.stack.Model.Table.ClassDevices(class); got != 0 {
		t.Errorf("after b's expiry, a sees %v devices of b's class, want 0", got)
	}
	if st := ca.Stats(); st.Merged != 0 || st.Expired != 1 {
		t.Errorf("after b's expiry: merged %d, expired %d; want 0 and 1", st.Merged, st.Expired)
	}
}
