package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// The cluster test's deployment: P partitions shared by three scorers, and
// the simulated fleet (with its attacks) shipped through it.
const (
	clusterPartitions = 8
	clusterDevices    = 300
	clusterSpan       = 3 * time.Hour
	// clusterPinnedTTL and clusterAckWait: a killed scorer's partitions go to
	// the others after the pinned TTL, its unacked messages after the ack
	// wait (longer, as SCALE-OUT.md asks).
	clusterPinnedTTL = 10 * time.Second
	clusterAckWait   = 30 * time.Second
	// clusterRebalance: how often each scorer checks the balance (every
	// pinned TTL by default): two checks (the wait before the first events)
	// outlast a pull (a third of the pinned TTL), and the shares after the
	// kill are reached within seconds.
	clusterRebalance = 2 * time.Second
	// clusterHang bounds each wait: generous, for a loaded machine; the
	// test asserts no speed.
	clusterHang = 5 * time.Minute
	// insertsView is the test's materialized view over scored_events: a
	// plain MergeTree that keeps every row every insert wrote, which the
	// ReplacingMergeTree's background merges would collapse out of sight.
	insertsView = "scored_inserts"
)

// TestClusterKills is issue 15's cluster test (item 7): three `iotwatch run
// --source events` processes share the partitions of one `iotwatch ingest`
// on a 3-node cluster of the real nats-server (go.mod's version, R3
// streams and buckets as iotwatch creates them with --replicas 3), writing
// to one ClickHouse. The simulated fleet is shipped in three parts; after
// the first, one scorer is killed with SIGKILL while it scores, after the
// second the node leading IOTWATCH_EVENTS is killed (SIGKILL) and, once the
// rest is published, started again. Then, from ClickHouse:
//
//   - nothing lost, nothing duplicated: every event shipped has one row
//     (FINAL = distinct ids = every row any insert wrote, seen through a
//     non-replacing materialized view = the one-instance run's rows);
//   - one owner at a time: in each partition's event order the scorer
//     column changes only where a scorer acquired the partition (the runs
//     of one scorer's rows are at most the acquisitions the scorers
//     counted);
//   - the alerts and decisions are those of one instance scoring the same
//     input: identical ids and count.
//
// Opt-in (IOTWATCH_CLUSTER=1): it still fails in some runs. It passed 11
// of 26 runs before w3's fixes (bench/RESULTS.md w1) and 12 of 14 after
// (w3), which removed three causes: an alert the killed scorer never stored for an event whose row it
// stored (lock-000006: the flusher now stores a flush's alerts and
// decisions before its rows, pipeline/flush.go), a scorer that acquired no
// partition (the first to pull took all 8; instances that see each other
// before the first message now start with their share, pipeline/partition)
// and, mostly, veh-000043's rate_spike an event earlier (a survivor merged
// the killed scorer's hour-old copies of vehicles' rate samples: the
// merged view now reads the later copy of a device, detectors/volume
// pickSample). What failed after them, one run each of 14 (veh-000043's
// rate_spike at 02:19:01, lock-000002's privileged_command_new at 01:07:15
// not raised), w4 traced (bench/RESULTS.md w4) to class views far behind
// or ahead of the judged event, not to the lag: a live scorer stuck 54-59 s
// in takeovers while the stream's leader was re-elected had its partitions
// ignored after 30 s (now waited for while it lives, 90 s at most); two
// scorers that had each caught up a taken-over partition held each other
// (fixed); and, still, a takeover's catch-up judges every message the
// previous owner was delivered (its pull-ahead) outside the class gate, and
// a taken-over partition's backlog is judged after its new owner's other
// partitions: veh-000043's rate_spike moved or missing in 2 of 13 runs
// after w4's fixes; in a third, a partition's pin moved during the leader
// election and its new owner wrote again 1015 rows the old one had stored
// (scored by two instances). Once in 4 runs before the volume fix, the scorer
// column changed 17 times in the partitions' event order for 15
// acquisitions (not seen in the 14). Before those, rows
// were made exact (pipeline/written.go), the class view got event-time
// watermarks (pipeline/classgate.go), and a restore's stalled checkpoint
// read is given up after 30 s (pipeline/store.go objectStall). The package
// is its own so that, once reliable, `go test ./...` starts it before
// tests/faults, restart and takeover (tests/cluster/doc.go).
func TestClusterKills(t *testing.T) {
	if os.Getenv("IOTWATCH_CLUSTER") == "" {
		t.Skip("fails in 3 runs of 13 (bench/RESULTS.md w4): veh-000043's class-dependent rate_spike, rows scored by two instances (see the comment): set IOTWATCH_CLUSTER=1 to run it")
	}
	started := time.Now()
	bin := pipetest.BuildIotwatch(t)
	natsBin, err := natsserver.FindModuleBinary()
	if err != nil {
		t.Fatalf("the cluster test needs the nats-server of go.mod's version: %v", err)
	}
	dsn := sharedCH.Get(t).DSN()
	msgs := pipetest.FleetMessages(t, clusterDevices, clusterSpan)

	// The one-instance run of the same input, on one embedded server.
	want := oneInstance(t, bin, dsn, msgs)
	if want.events == 0 || want.copies != want.events || len(want.alerts) == 0 {
		t.Fatalf("one instance: %d events, %d rows inserted, %d alerts: want rows = events > 0 and alerts (else the comparison proves nothing)",
			want.events, want.copies, len(want.alerts))
	}
	if got := want.events + want.deadLetters; got != lines(msgs) {
		t.Fatalf("one instance: %d events scored and %d dead letters of %d lines shipped", want.events, want.deadLetters, lines(msgs))
	}
	t.Logf("one instance: %d events, %d dead letters, %d alerts, %d decisions (%.0fs)",
		want.events, want.deadLetters, len(want.alerts), len(want.decisions), time.Since(started).Seconds())

	c, err := natsserver.StartCluster(natsserver.ClusterOptions{Binary: natsBin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nats-server cluster output:\n%s", c.Output())
		}
		c.Stop()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*clusterHang)
	defer cancel()
	admin, ajs, err := bus.Connect(ctx, c.URL(), "test-admin", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	const db = "scaleout_cluster"
	conn := prepareDB(t, dsn, db)

	names := []string{"scorer-a", "scorer-b", "scorer-c"}
	scorers := make([]*scorer, len(names))
	for i, name := range names {
		// One after the other: three creating the R3 streams at once on a
		// new cluster timed out (`cannot create or update stream
		// "IOTWATCH_LOGS": context deadline exceeded`), and an instance that
		// cannot set up its streams exits.
		scorers[i] = startScorer(t, bin, c.URL(), dsn, db, name, 3)
		waitUntil(t, ctx, name+" running", func() (bool, string) {
			alive(t, scorers[i])
			return scorers[i].metric(schemas.MetricEventsIngested, "") >= 0, "no metrics yet"
		})
	}
	// Every scorer is present before the first event, so that the
	// partitions are shared from the start rather than moved later.
	waitUntil(t, ctx, "three scorers present", func() (bool, string) {
		alive(t, scorers...)
		kv, err := ajs.KeyValue(ctx, schemas.KVScorers)
		if err != nil {
			return false, err.Error()
		}
		keys, err := kv.Keys(ctx)
		return err == nil && len(keys) == len(scorers), fmt.Sprintf("presence keys %q (%v)", keys, err)
	})
	// ... and each has seen the others: it checked the balance twice since
	// the third appeared (every clusterRebalance), so that its pulls sent
	// while it counted fewer instances have expired (a third of the pinned
	// TTL). Then each pulls only the partitions it prefers, and the first
	// events give each its share (partition.share.prefers). Published
	// before, in 4 of 26 runs the first scorer scored the whole first third
	// and, after its kill, one survivor all the rest: no row of the other
	// (bench/RESULTS.md w1).
	checks := &natstest.BalanceChecks{Names: names}
	waitUntil(t, ctx, "every scorer checking the balance twice with three present", func() (bool, string) {
		alive(t, scorers...)
		kv, err := ajs.KeyValue(ctx, schemas.KVScorers)
		if err != nil {
			return false, err.Error()
		}
		return checks.Observe(ctx, kv, 2)
	})
	ingest := startIngest(t, bin, c.URL(), 3)
	waitUntil(t, ctx, "the ingest stage's streams", func() (bool, string) {
		_, err := ajs.Stream(ctx, schemas.StreamLogs)
		return err == nil, fmt.Sprint(err)
	})

	third := len(msgs) / 3
	publish(t, ctx, ajs, msgs, 0, third)
	scored := func(ss ...*scorer) float64 {
		sum := 0.0
		for _, s := range ss {
			sum += max(0, s.metric(schemas.MetricEventsIngested, ""))
		}
		return sum
	}
	// One scorer is killed while it scores: it owns partitions and has
	// stored rows of some of their events. (Killed when it had scored
	// events but stored none, in one run: its successors stored them
	// all, and the check that every scorer has rows failed.) It has
	// scored victimMin events at least: with the class watermark a scorer
	// starts with a fetch of one message, and the first one to store rows
	// was killed after 11 to 21 events, leaving its successors nothing of
	// its to take over.
	const victimMin = 2000
	var victim *scorer
	waitUntil(t, ctx, "a scorer scoring", func() (bool, string) {
		alive(t, scorers...)
		for _, s := range scorers {
			if s.metric(schemas.MetricPartitionsOwned, "") > 0 && s.metric(schemas.MetricRowsWritten, "") > 0 &&
				s.metric(schemas.MetricEventsIngested, "") >= victimMin {
				victim = s
				return true, ""
			}
		}
		return false, fmt.Sprintf("%.0f events scored", scored(scorers...))
	})
	victimAcquired := victim.metric(schemas.MetricPartitionChanges, `change="acquired"`)
	victimScored, allScored := victim.metric(schemas.MetricEventsIngested, ""), scored(scorers...)
	victim.Kill()
	var survivors []*scorer
	for _, s := range scorers {
		if s != victim {
			survivors = append(survivors, s)
		}
	}
	t.Logf("killed %s (SIGKILL) after it scored %.0f events, %.0f by all; it had acquired %.0f partitions",
		victim.name, victimScored, allScored, victimAcquired)

	publish(t, ctx, ajs, msgs, third, 2*third)
	leader := -1
	waitUntil(t, ctx, "a leader of "+schemas.StreamEvents, func() (bool, string) {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		defer acancel()
		leader, err = c.StreamLeader(actx, admin, schemas.StreamEvents)
		return err == nil, fmt.Sprint(err)
	})
	c.Kill(leader)
	t.Logf("killed nats-server %s (SIGKILL), the leader of %s, with %.0f events scored", c.Name(leader), schemas.StreamEvents, scored(scorers...))
	publish(t, ctx, ajs, msgs, 2*third, len(msgs))
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}

	waitUntil(t, ctx, "every log ingested and every partition scored and acked", func() (bool, string) {
		alive(t, survivors...)
		if err, exited := ingest.Exited(); exited {
			t.Fatalf("the ingest stage exited: %v", err)
		}
		return drained(ctx, ajs, len(msgs))
	})
	acquired := victimAcquired
	for _, s := range survivors {
		acquired += s.metric(schemas.MetricPartitionChanges, `change="acquired"`)
	}
	for _, s := range survivors {
		// What the event-time watermark of the class view did (logged, not
		// asserted: the alerts are what must match).
		t.Logf("%s: scored %.0f events, acquired %.0f partitions, owns %.0f; held events %.0f times (%.1f s), %.0f holds given up, %.0f stalled partitions ignored, %.0f class rounds failed; "+
			"takeovers: %.0f events caught up (%.0f stored already), %.0f replayed through the class gate",
			s.name, s.metric(schemas.MetricEventsIngested, ""), s.metric(schemas.MetricPartitionChanges, `change="acquired"`),
			s.metric(schemas.MetricPartitionsOwned, ""), s.metric(schemas.MetricClassHolds, ""), s.metric(schemas.MetricClassHoldSeconds, ""),
			s.metric(schemas.MetricClassHoldOverruns, ""), s.metric(schemas.MetricClassStalls, ""),
			s.metric(schemas.MetricClassSyncFailures, ""), s.metric(schemas.MetricCaughtUp, ""), s.metric(schemas.MetricCatchUpStored, ""),
			s.metric(schemas.MetricReplayed, ""))
	}
	if store, err := ajs.ObjectStore(ctx, schemas.BucketClassStats); err == nil {
		if infos, err := store.List(ctx); err == nil {
			for _, info := range infos {
				t.Logf("class statistics of %s, written %s: watermark %s, partitions %q", info.Name, info.ModTime.UTC().Format(time.TimeOnly),
					watermarkTime(info.Metadata[schemas.ClassStatsMetaWatermark]), info.Metadata[schemas.ClassStatsMetaPartitions])
			}
		}
	}
	for _, s := range survivors {
		s.Stop(t, clusterHang)
	}
	ingest.Stop(t, clusterHang)

	got := readOutcome(t, conn, db)
	dlq, err := ajs.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got.deadLetters = info.State.Msgs
	runs, perScorer, runList := ownerRuns(t, conn, db)
	t.Logf("three instances: %d events (%d rows inserted, %d FINAL, %d distinct ids), %d scored by two instances, %d dead letters; "+
		"events by scorer %v; %d runs of one scorer in the partitions' event order, %.0f acquisitions; %d alerts, %d decisions; %.0fs in all",
		got.events, got.copies, got.final, got.distinct, got.twice, got.deadLetters, perScorer, runs, acquired,
		len(got.alerts), len(got.decisions), time.Since(started).Seconds())

	if got.copies != want.events || got.final != want.events || got.distinct != want.events {
		t.Errorf("scored events: %d rows inserted, %d FINAL, %d distinct ids; want %d each (the one-instance run's): %s",
			got.copies, got.final, got.distinct, want.events, "lost or scored twice")
	}
	if got.twice != 0 {
		t.Errorf("%d events were scored by two instances", got.twice)
	}
	if got.deadLetters != want.deadLetters {
		t.Errorf("%d dead letters, want %d (the one-instance run's)", got.deadLetters, want.deadLetters)
	}
	if perScorer[victim.name] == 0 || len(perScorer) != len(names) {
		t.Errorf("events by scorer %v: want some from each of %q (the killed %s too)", perScorer, names, victim.name)
	}
	if float64(runs) > acquired {
		t.Errorf("the partitions' events change scorer %d times (runs of one scorer), but the scorers acquired partitions only %.0f times: two owners scored a partition at once; the runs:\n%s",
			runs, acquired, runList)
	}
	testids.Compare(t, "alerts in ClickHouse", "with three instances and the kills", got.alerts, want.alerts)
	testids.Compare(t, "decisions in ClickHouse", "with three instances and the kills", got.decisions, want.decisions)
	if extra, missing := idsNotIn(got.alerts, want.alerts), idsNotIn(want.alerts, got.alerts); len(extra)+len(missing) > 0 {
		logAlerts(t, conn, db, "not in the one-instance run", extra, "scaleout_one")
		logAlerts(t, conn, "scaleout_one", "missing", missing, db)
	}
}

// idsNotIn returns the ids of a not in b.
func idsNotIn(a, b []string) []string {
	var out []string
	for _, id := range a {
		if !slices.Contains(b, id) {
			out = append(out, id)
		}
	}
	return out
}

// logAlerts logs what tells alerts apart (device, time, severity, reasons,
// the events' scorers) for an analysis of a difference, and how the other
// run (database other) scored the alert's last event.
func logAlerts(t *testing.T, conn clickhouse.Conn, db, what string, ids []string, other string) {
	t.Helper()
	for _, id := range ids {
		var device, at, sev, reasons string
		var last uint64
		q := fmt.Sprintf("SELECT %s, toString(%s), %s, arrayStringConcat(%s, ','), %s FROM %s.%s WHERE %s = %s LIMIT 1",
			schemas.ColDevice, schemas.ColTime, schemas.ColSeverity, schemas.ColReasons, schemas.ColLastEventID,
			schemas.QuoteIdent(db), schemas.TableAlerts, schemas.ColID, schemas.QuoteString(id))
		if err := conn.QueryRow(context.Background(), q).Scan(&device, &at, &sev, &reasons, &last); err != nil {
			t.Logf("alert %s (%s): %v", id, what, err)
			continue
		}
		// The event's findings with their observed and expected values: a
		// rate spike's expectation carries volume's class ramp, its ratio
		// threshold the class burstiness (bench/RESULTS.md w3).
		row := func(db string) string {
			var by, reasons, scores, observed, expected string
			q := fmt.Sprintf("SELECT %s, arrayStringConcat(%s, ','), toString(%s), toString(%s), toString(%s) FROM %s.%s FINAL WHERE %s = %d LIMIT 1",
				schemas.ColScorer, schemas.ColReasons, schemas.ColScores, schemas.ColObserved, schemas.ColExpected,
				schemas.QuoteIdent(db), schemas.TableScored, schemas.ColEventID, last)
			if err := conn.QueryRow(context.Background(), q).Scan(&by, &reasons, &scores, &observed, &expected); err != nil {
				return err.Error()
			}
			return fmt.Sprintf("scored by %s, reasons %s, scores %s, observed %s, expected %s", by, reasons, scores, observed, expected)
		}
		t.Logf("alert %s (%s): device %s at %s, %s, reasons %s, last event %d %s", id, what, device, at, sev, reasons, last, row(db))
		t.Logf("alert %s: its last event in %s: %s", id, other, row(other))
	}
}

// clusterOutcome is what a run left in ClickHouse and NATS.
type clusterOutcome struct {
	events      uint64 // scored events (FINAL)
	final       uint64
	copies      uint64 // event rows every insert wrote (the materialized view)
	distinct    uint64 // distinct event ids inserted
	twice       uint64 // events inserted by two instances
	deadLetters uint64
	alerts      []string
	decisions   []string
}

// oneInstance runs the ingest stage and one scorer over msgs on one
// embedded NATS server, with the cluster's flags.
func oneInstance(t *testing.T, bin, dsn string, msgs [][]byte) clusterOutcome {
	t.Helper()
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 2*clusterHang)
	defer cancel()
	nc, js, err := bus.Connect(ctx, ns.URL(), "test-admin", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const db = "scaleout_one"
	conn := prepareDB(t, dsn, db)
	s := startScorer(t, bin, ns.URL(), dsn, db, "scorer-one", 1)
	in := startIngest(t, bin, ns.URL(), 1)
	waitUntil(t, ctx, "the ingest stage's streams", func() (bool, string) {
		_, err := js.Stream(ctx, schemas.StreamLogs)
		return err == nil, fmt.Sprint(err)
	})
	publish(t, ctx, js, msgs, 0, len(msgs))
	waitUntil(t, ctx, "every log ingested and every partition scored and acked", func() (bool, string) {
		alive(t, s)
		return drained(ctx, js, len(msgs))
	})
	s.Stop(t, clusterHang)
	in.Stop(t, clusterHang)
	out := readOutcome(t, conn, db)
	dlq, err := js.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out.deadLetters = info.State.Msgs
	return out
}

// prepareDB migrates database db (as iotwatch does) and adds the test's
// materialized view over scored_events, before any scorer writes.
func prepareDB(t *testing.T, dsn, db string) clickhouse.Conn {
	t.Helper()
	_, conn := pipetest.OpenDB(t, dsn, db)
	q := fmt.Sprintf("CREATE MATERIALIZED VIEW %s.%s ENGINE = MergeTree() ORDER BY (%s) AS SELECT %s, %s, %s, %s, %s, %s FROM %s.%s",
		schemas.QuoteIdent(db), insertsView, schemas.ColEventID,
		schemas.ColEventID, schemas.ColStreamSeq, schemas.ColTenant, schemas.ColDevice, schemas.ColScorer, schemas.ColTime,
		schemas.QuoteIdent(db), schemas.TableScored)
	if err := conn.Exec(context.Background(), q); err != nil {
		t.Fatalf("cannot create the view of every insert: %v", err)
	}
	return conn
}

// scorer is one `iotwatch run --source events` process.
type scorer struct {
	*pipetest.Proc
	name    string
	metrics string
}

// startScorer starts a scorer as an operator does, with --replicas
// replicas, its state in the Object Store and its metrics served.
func startScorer(t *testing.T, bin, natsURL, dsn, db, name string, replicas int) *scorer {
	t.Helper()
	port, err := natsserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// One worker: with two, the class statistics they share learn in an
	// order two undisturbed runs do not repeat (pipeline's
	// TestStreamLeaderKill).
	p := pipetest.StartProc(t, bin, name, "run", "--source", "events", "--instance", name,
		"--partitions", strconv.Itoa(clusterPartitions), "--replicas", strconv.Itoa(replicas),
		"--nats", natsURL, "--clickhouse", dsn, "--database", db,
		"--pinned-ttl", clusterPinnedTTL.String(), "--ack-wait", clusterAckWait.String(), "--rebalance", clusterRebalance.String(),
		"--checkpoint", "nats:", "--checkpoint-every", "2s", "--cluster-instances", "3",
		"--workers", "1", "--flush-interval", "200ms", "--metrics-addr", addr, "--log-level", "info")
	return &scorer{Proc: p, name: name, metrics: "http://" + addr + "/metrics"}
}

// metric returns the sum of the scorer's samples of name with labels, or
// -1 while it cannot be read.
func (s *scorer) metric(name, labels string) float64 { return pipetest.Metric(s.metrics, name, labels) }

// startIngest starts `iotwatch ingest` as an operator does.
func startIngest(t *testing.T, bin, natsURL string, replicas int) *pipetest.Proc {
	t.Helper()
	return pipetest.StartProc(t, bin, "ingest", "ingest", "--nats", natsURL, "--partitions", strconv.Itoa(clusterPartitions),
		"--replicas", strconv.Itoa(replicas), "--ack-wait", clusterAckWait.String(), "--log-level", "warn")
}

// alive fails t at once when a scorer exited, rather than at a wait's hang
// bound.
func alive(t *testing.T, ss ...*scorer) {
	t.Helper()
	for _, s := range ss {
		if err, exited := s.Exited(); exited {
			t.Fatalf("%s exited: %v", s.name, err)
		}
	}
}

// publish publishes msgs[from:to] as the shippers' JSON logs, message ids
// m-<i> (pipetest.PublishLogs'), each retried until stored: a publish an
// election refused is retried under the same id, so the log sequences, and
// with them the event ids, are those of an undisturbed publish.
func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, msgs [][]byte, from, to int) {
	t.Helper()
	subject := bus.LogSubject(schemas.FormatJSON, "sim")
	for i := from; i < to; i++ {
		waitUntil(t, ctx, fmt.Sprintf("log message %d stored", i), func() (bool, string) {
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			defer acancel()
			_, err := js.Publish(actx, subject, msgs[i], jetstream.WithMsgID(fmt.Sprint("m-", i)))
			return err == nil, fmt.Sprint(err)
		})
	}
}

// drained reports whether the ingest consumer has delivered and seen acked
// all n log messages and then every partition consumer has nothing pending
// or unacked, and else what is left.
func drained(ctx context.Context, js jetstream.JetStream, n int) (bool, string) {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info := func(stream, name string) (*jetstream.ConsumerInfo, error) {
		c, err := js.Consumer(actx, stream, name)
		if err != nil {
			return nil, err
		}
		return c.Info(actx)
	}
	ci, err := info(schemas.StreamLogs, schemas.ConsumerIngest)
	if err != nil {
		return false, err.Error()
	}
	if ci.Delivered.Stream < uint64(n) || ci.NumPending > 0 || ci.NumAckPending > 0 {
		return false, fmt.Sprintf("ingest: delivered up to %d of %d, %d pending, %d unacked", ci.Delivered.Stream, n, ci.NumPending, ci.NumAckPending)
	}
	var left []string
	for p := range clusterPartitions {
		ci, err := info(schemas.StreamEvents, schemas.ScorerConsumer(p))
		if err != nil {
			return false, err.Error()
		}
		if ci.NumPending > 0 || ci.NumAckPending > 0 {
			left = append(left, fmt.Sprintf("partition %d: %d pending, %d unacked (ack floor %d, %d redelivered)",
				p, ci.NumPending, ci.NumAckPending, ci.AckFloor.Stream, ci.NumRedelivered))
		}
	}
	return len(left) == 0, strings.Join(left, "; ")
}

// readOutcome reads the rows, alerts and decisions of database db.
func readOutcome(t *testing.T, conn clickhouse.Conn, db string) clusterOutcome {
	t.Helper()
	ctx := context.Background()
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	// Events, not the silence sweep's synthetic rows (stream_seq 0).
	events := schemas.ColStreamSeq + " > 0"
	scored, inserts := db+"."+schemas.TableScored, db+"."+insertsView
	var out clusterOutcome
	out.final = count(fmt.Sprintf("SELECT count() FROM %s FINAL WHERE %s", scored, events))
	out.events = out.final
	out.copies = count(fmt.Sprintf("SELECT count() FROM %s WHERE %s", inserts, events))
	out.distinct = count(fmt.Sprintf("SELECT uniqExact(%s) FROM %s WHERE %s", schemas.ColEventID, inserts, events))
	out.twice = count(fmt.Sprintf("SELECT count() FROM (SELECT %s FROM %s WHERE %s GROUP BY %s HAVING uniqExact(%s) > 1)",
		schemas.ColEventID, inserts, events, schemas.ColEventID, schemas.ColScorer))
	out.alerts, out.decisions = pipetest.IDs(t, conn, db, schemas.TableAlerts), pipetest.IDs(t, conn, db, schemas.TableDecisions)
	return out
}

// ownerRuns reads every event row every insert wrote and returns, over all
// partitions, the runs of one scorer in the partition's event order (a
// partition scored by one owner, then another, has two), and the events of
// each scorer (an event inserted twice counted once, for either), and the
// runs listed by partition (scorer, events, first and last event id and
// time), for a failure's message.
func ownerRuns(t *testing.T, conn clickhouse.Conn, db string) (runs int, perScorer map[string]int, list string) {
	t.Helper()
	// Events inserted more than once are left out of the runs (the test
	// counts them apart): after a kill, the next owner scoring what the dead
	// one wrote but did not ack is a second insert, not a second owner at
	// the same time, and each such event would count as two runs.
	rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT any(%s), any(%s), any(%s), count(), %s, any(%s) FROM %s.%s WHERE %s > 0 GROUP BY %s ORDER BY %s",
		schemas.ColTenant, schemas.ColDevice, schemas.ColScorer, schemas.ColEventID, schemas.ColTime, db, insertsView, schemas.ColStreamSeq, schemas.ColEventID, schemas.ColEventID))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type run struct {
		by          string
		n           int
		first, last uint64
		from, to    time.Time
	}
	byPart := make([][]run, clusterPartitions)
	perScorer = map[string]int{}
	for rows.Next() {
		var tenant, device, by string
		var copies, id uint64
		var at time.Time
		if err := rows.Scan(&tenant, &device, &by, &copies, &id, &at); err != nil {
			t.Fatal(err)
		}
		perScorer[by]++
		if copies > 1 {
			continue
		}
		p := schemas.PartitionOf(schemas.Hash2Alt([]byte(tenant), []byte(device)), clusterPartitions)
		if rs := byPart[p]; len(rs) == 0 || rs[len(rs)-1].by != by {
			runs++
			byPart[p] = append(byPart[p], run{by: by, first: id, from: at})
		}
		r := &byPart[p][len(byPart[p])-1]
		r.n, r.last, r.to = r.n+1, id, at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for p, rs := range byPart {
		for _, r := range rs {
			fmt.Fprintf(&b, "partition %d: %s %d events, ids %d-%d, %s-%s\n", p, r.by, r.n, r.first, r.last,
				r.from.UTC().Format(time.TimeOnly), r.to.UTC().Format(time.TimeOnly))
		}
	}
	return runs, perScorer, b.String()
}

// lines counts the records of msgs.
func lines(msgs [][]byte) uint64 {
	n := 0
	for _, m := range msgs {
		n += strings.Count(strings.TrimRight(string(m), "\n"), "\n") + 1
	}
	return uint64(n)
}

// waitUntil polls cond until it holds, failing t with cond's last word
// after clusterHang or when ctx ends (a bound on a hang, not a speed).
func waitUntil(t *testing.T, ctx context.Context, what string, cond func() (bool, string)) {
	t.Helper()
	start, said := time.Now(), time.Now()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if ctx.Err() != nil || time.Since(start) > clusterHang {
			t.Fatalf("no %s within %s: %s", what, clusterHang, why)
		}
		if time.Since(said) > 30*time.Second {
			t.Logf("still waiting for %s after %.0fs: %s", what, time.Since(start).Seconds(), why)
			said = time.Now()
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, not waiting for work by time
	}
}

// watermarkTime formats a class contribution's watermark (Unix ns).
func watermarkTime(v string) string {
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return strconv.Quote(v)
	}
	return time.Unix(0, ns).UTC().Format(time.DateTime)
}
