package permissions_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/ingest"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// scaleOutPartitions is the partition count of TestScaleOutRoles' ingest
// stage and scorers.
const scaleOutPartitions = 4

// TestScaleOutRoles: the ingest and scorer roles of accounts.conf do their
// jobs on the real nats-server of go.mod's version (pinned consumers need
// 2.11+): an ingest instance sets up its streams and consumer, decodes the
// shipper's logs and publishes the events; two `iotwatch run --source
// events --checkpoint nats:` processes under the scorer role set up the
// rest, share the partitions (pinned consumers, presence keys, unpin on
// release), score and ack every batch, count the cluster-wide cap, watch
// the shared allowlist and save their checkpoints in the Object Store; a
// third restores them. The server reports no permission violation while
// they work, and each role is refused what is not its job.
func TestScaleOutRoles(t *testing.T) {
	srv := StartModuleServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	cfg := bus.DefaultStreamsConfig()
	bin := pipetest.BuildIotwatch(t)

	// The ingest stage starts first, on a server with nothing set up.
	in := connect(t, srv, userIngest)
	icons, err := bus.EnsureIngest(ctx, in.js, cfg)
	if err != nil {
		t.Fatalf("ingest cannot set up its streams and consumer: %v", err)
	}
	st, err := ingest.NewStage(ingest.StageConfig{Partitions: scaleOutPartitions}, ingest.Options{}, icons, in.js, sink.NewNATSPublisher(in.js, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	wg.Go(func() {
		if err := st.Run(runCtx); err != nil {
			t.Errorf("ingest stage: %v", err)
		}
	})
	sh := connect(t, srv, userShipper)
	start := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	published := 0
	publish := func(msgs, devices int) {
		t.Helper()
		for range msgs {
			i := published
			data := line(fmt.Sprintf("meter-%d", i%devices), start.Add(time.Duration(i)*time.Second))
			if _, err := sh.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw1"), []byte(data),
				jetstream.WithMsgID(fmt.Sprint("gw1-", i)), jetstream.WithExpectStream(schemas.StreamLogs)); err != nil {
				t.Fatalf("shipper cannot publish a log: %v", err)
			}
			published++
		}
		waitUntil(t, "the ingest stage acked every log", func() (bool, string) {
			return st.M.Acked.Load() == uint64(published), fmt.Sprintf("acked %d of %d", st.M.Acked.Load(), published)
		})
	}
	publish(20, 16)
	// trickle publishes a log now and then while the test waits: a
	// partition is acquired with its first message under a new pin, and a
	// periodic checkpoint is taken after a fetch.
	var lastLog time.Time
	trickle := func() {
		if time.Since(lastLog) > time.Second {
			publish(1, 64)
			lastLog = time.Now()
		}
	}

	// Two scorers, as an operator starts them, under the scorer role.
	dsn := clickhouse.Get(t).DSN()
	a := startScorer(t, bin, srv, dsn, "a")
	b := startScorer(t, bin, srv, dsn, "b")
	waitUntil(t, "both scorers own partitions", func() (bool, string) {
		running(t, a, b)
		trickle()
		na, nb := a.metric(schemas.MetricPartitionsOwned), b.metric(schemas.MetricPartitionsOwned)
		return na > 0 && nb > 0 && na+nb == scaleOutPartitions, fmt.Sprintf("a owns %v, b owns %v", na, nb)
	})
	publish(64, 64) // every partition gets events
	sc := connect(t, srv, userScorer)
	drained := func(owners ...*scorerProc) (bool, string) {
		var state []string
		for p := range scaleOutPartitions {
			info, err := sc.js.Consumer(ctx, schemas.StreamEvents, schemas.ScorerConsumer(p))
			if err != nil {
				return false, fmt.Sprintf("scorer cannot read consumer %s: %v", schemas.ScorerConsumer(p), err)
			}
			ci, err := info.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			if ci.NumPending > 0 || ci.NumAckPending > 0 || ci.Delivered.Consumer == 0 {
				state = append(state, fmt.Sprintf("partition %d: pending %d, ack-pending %d, delivered %d", p, ci.NumPending, ci.NumAckPending, ci.Delivered.Consumer))
			}
		}
		for _, o := range owners {
			state = append(state, fmt.Sprintf("%s scored %v events", o.Name, o.metric(schemas.MetricEventsIngested)))
		}
		return len(state) == len(owners), strings.Join(state, "; ")
	}
	waitUntil(t, "every partition is scored and acked", func() (bool, string) {
		running(t, a, b)
		ok, state := drained(a, b)
		return ok && a.metric(schemas.MetricEventsIngested) > 0 && b.metric(schemas.MetricEventsIngested) > 0, state
	})

	// Each publishes its class statistics and merges the other's
	// (--class-sync, bucket IOTWATCH_CLASS_STATS).
	waitUntil(t, "each scorer merged the other's class statistics", func() (bool, string) {
		running(t, a, b)
		na, nb := a.metric(schemas.MetricClassMerged), b.metric(schemas.MetricClassMerged)
		return na == 1 && nb == 1, fmt.Sprintf("a merged %v, b merged %v", na, nb)
	})

	// Their checkpoints are in the Object Store (--checkpoint-every, taken
	// after a fetch: a log now and then), which the role reads too.
	waitUntil(t, "a checkpoint in the Object Store", func() (bool, string) {
		running(t, a, b)
		trickle()
		obs, err := sc.js.ObjectStore(ctx, schemas.BucketCheckpoints)
		if err != nil {
			return false, err.Error()
		}
		infos, err := obs.List(ctx)
		if err != nil {
			return false, err.Error()
		}
		names := make([]string, 0, len(infos))
		for _, i := range infos {
			names = append(names, i.Name)
		}
		return strings.Contains(strings.Join(names, " "), schemas.CheckpointGlobalObject), fmt.Sprintf("objects %q", names)
	})

	// One stops cleanly (its final checkpoint, its partitions unpinned): the
	// other takes them all; a third starts from the checkpoints.
	a.stop(t)
	waitUntil(t, "b owns every partition", func() (bool, string) {
		running(t, b)
		trickle()
		n := b.metric(schemas.MetricPartitionsOwned)
		return n == scaleOutPartitions, fmt.Sprintf("b owns %v", n)
	})
	c := startScorer(t, bin, srv, dsn, "c")
	waitUntil(t, "c restored the checkpoints", func() (bool, string) {
		running(t, b, c)
		return restoredRe.MatchString(c.Output()), "no restore logged yet"
	})
	publish(16, 64)
	waitUntil(t, "every partition is scored and acked", func() (bool, string) { return drained() })
	b.stop(t)
	c.stop(t)

	// The pipeline role keeps its checkpoints in the same bucket
	// (`run --checkpoint nats:`): create, put, replace, get.
	pl := connect(t, srv, userPipeline)
	obs, err := bus.EnsureCheckpoints(ctx, pl.js, cfg)
	if err != nil {
		t.Fatalf("pipeline cannot set up the checkpoints' bucket: %v", err)
	}
	for _, v := range []string{"first", "second"} { // the second put purges the first's chunks
		if _, err := obs.PutString(ctx, "pipeline-test", strings.Repeat(v, 100_000)); err != nil {
			t.Fatalf("pipeline cannot put a checkpoint: %v", err)
		}
	}
	if got, err := obs.GetString(ctx, "pipeline-test"); err != nil || got != strings.Repeat("second", 100_000) {
		t.Fatalf("pipeline cannot get its checkpoint back: %d bytes, %v", len(got), err)
	}
	if err := obs.Delete(ctx, "pipeline-test"); err != nil {
		t.Fatalf("pipeline cannot delete its test object: %v", err)
	}

	// While they worked, the server refused nothing to anyone.
	for _, cl := range []*client{in, sh, sc, pl} {
		cl.noViolations(t)
	}
	if v := violationRe.FindAllString(srv.Output(), -1); len(v) > 0 {
		t.Errorf("the server refused the roles while they did their jobs: %q", v)
	}

	// And nothing else.
	decision := schemas.SubjectDecisionsPrefix + "." + schemas.ActionBlock
	checkpointChunk := "$O." + schemas.BucketCheckpoints + ".C.x"
	checkpointStream := "OBJ_" + schemas.BucketCheckpoints
	presenceKey := bus.KVSubject(schemas.KVScorers, "x")
	for _, s := range []string{decision, schemas.SubjectAlertsPrefix + ".high", schemas.SubjectIncidentsPrefix + ".high",
		bus.LogSubject(schemas.FormatJSON, "gw1"), schemas.SubjectDecisionsApplied,
		bus.KVSubject(schemas.KVActiveBlocks, "x"), bus.KVSubject(schemas.KVBudgets, "x"), bus.KVSubject(schemas.KVAllowlist, "x"),
		presenceKey, checkpointChunk,
		"$JS.API.STREAM.CREATE." + schemas.StreamDecisions, "$JS.API.STREAM.PURGE." + schemas.StreamLogs,
		"$JS.API.STREAM.DELETE." + schemas.StreamEvents,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamEvents + "." + schemas.ScorerConsumer(0),
		"$JS.API.CONSUMER.UNPIN." + schemas.StreamEvents + "." + schemas.ScorerConsumer(0),
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.DELETE." + schemas.StreamLogs + "." + schemas.ConsumerIngest} {
		in.denied(t, s)
	}
	for _, s := range []string{schemas.EventsSubject(0), bus.LogSubject(schemas.FormatJSON, "gw1"), schemas.SubjectDecisionsApplied,
		bus.KVSubject(schemas.KVAllowlist, "x"), "$O.OTHER.C.x", "$O.OTHER.M.x",
		// No stream is deleted, nor a stream but the checkpoints' purged.
		"$JS.API.STREAM.PURGE." + schemas.StreamEvents, "$JS.API.STREAM.PURGE." + bus.KVStream(schemas.KVScorers),
		"$JS.API.STREAM.DELETE." + schemas.StreamEvents, "$JS.API.STREAM.DELETE." + schemas.StreamLogs,
		"$JS.API.STREAM.DELETE." + checkpointStream, "$JS.API.STREAM.DELETE." + bus.KVStream(schemas.KVScorers),
		"$JS.API.STREAM.DELETE." + bus.KVStream(schemas.KVActiveBlocks),
		// Not the logs, nor the others' consumers.
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.MSG.NEXT." + schemas.StreamLogs + "." + schemas.ConsumerIngest,
		"$JS.API.CONSUMER.CREATE." + schemas.StreamLogs + ".x",
		"$JS.API.CONSUMER.CREATE." + schemas.StreamLogs + ".x.>",
		"$JS.API.CONSUMER.UNPIN." + schemas.StreamLogs + "." + schemas.ConsumerIngest,
		"$JS.ACK." + schemas.StreamLogs + "." + schemas.ConsumerIngest + ".1.1.1.1.0",
		// Its partition consumers are never deleted by it.
		"$JS.API.CONSUMER.DELETE." + schemas.StreamEvents + "." + schemas.ScorerConsumer(0),
		"$JS.API.CONSUMER.DELETE." + schemas.StreamEvents + "." + schemas.ScorerConsumer(scaleOutPartitions-1)} {
		sc.denied(t, s)
	}
	for _, s := range []string{presenceKey, "$JS.API.STREAM.DELETE." + checkpointStream, "$JS.API.STREAM.PURGE." + schemas.StreamEvents,
		"$JS.API.CONSUMER.UNPIN." + schemas.StreamEvents + "." + schemas.ScorerConsumer(0), "$O.OTHER.C.x"} {
		pl.denied(t, s)
	}
	for _, cl := range []*client{sh, in} {
		cl.denied(t, checkpointChunk)
		cl.denied(t, "$JS.API.STREAM.PURGE."+checkpointStream)
	}
	for _, cl := range []*client{in, sc} {
		cl.deniedSub(t, "_INBOX.>")
		cl.deniedSub(t, schemas.InboxPipeline+".>")
	}
	in.deniedSub(t, schemas.InboxScorer+".>")
	sc.deniedSub(t, schemas.InboxIngest+".>")
	sc.deniedSub(t, schemas.SubjectLogsAll)
}

var (
	// restoredRe matches a scorer's log line of a restored Object Store
	// checkpoint (the whole state, or the global object of an owner of
	// partitions).
	restoredRe = regexp.MustCompile(`msg="restored (global )?checkpoint[:"]`)
	// violationRe matches the server's log line of a refused publish or
	// subscription.
	violationRe = regexp.MustCompile(`(Publish|Subscription) Violation[^\n]*`)
)

// scorerProc is one `iotwatch run --source events` process and the address
// of its metrics.
type scorerProc struct {
	*pipetest.Proc
	metrics string
}

// startScorer starts `iotwatch run --source events --checkpoint nats:` as
// the scorer role (with its commands' default reply inboxes), saving a
// checkpoint every second and serving its metrics.
func startScorer(t *testing.T, bin string, srv *natsserver.Process, dsn, name string) *scorerProc {
	t.Helper()
	port, err := natsserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	return &scorerProc{metrics: metrics, Proc: pipetest.StartProc(t, bin, "scorer "+name,
		"run", "--source", "events", "--partitions", strconv.Itoa(scaleOutPartitions), "--pinned-ttl", "2s",
		"--nats", srv.URL(), "--nats-user", userScorer, "--nats-password", password(userScorer),
		"--clickhouse", dsn, "--database", "scaleout_roles", "--workers", "1", "--flush-interval", "50ms",
		"--checkpoint", "nats:", "--checkpoint-every", "1s", "--class-sync", "1s", "--metrics-addr", metrics)}
}

// running fails the test at once if a scorer exited (refused at start-up,
// say), rather than at a wait's hang bound.
func running(t *testing.T, ps ...*scorerProc) {
	t.Helper()
	for _, s := range ps {
		if err, exited := s.Exited(); exited {
			t.Fatalf("%s exited: %v", s.Name, err)
		}
	}
}

// stop ends the scorer as an operator does (SIGTERM: drain, final
// checkpoint, partitions unpinned) and checks it exited cleanly.
func (s *scorerProc) stop(t *testing.T) {
	t.Helper()
	s.Stop(t, 2*time.Minute) // a hang bound
}

// metric returns the sum of name's samples on the scorer's /metrics, or -1
// while it cannot be read.
func (s *scorerProc) metric(name string) float64 {
	return pipetest.Metric("http://"+s.metrics+"/metrics", name, "")
}
