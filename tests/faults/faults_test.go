package faults_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors"
	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/internal/testids"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// heapBound is the largest live heap (what the last collection marked live,
// runtime/metrics /gc/heap/live:bytes) a fault may cause in the test process,
// which holds the pipeline, the embedded NATS server and the publisher: far
// above what the pipeline's bounds allow, far below buffering a whole outage.
// The live heap, not HeapInuse: on a machine whose CPUs are oversubscribed
// the collector runs late and HeapInuse grows with what awaits collection
// (568 MB in TestOverload at load 20, under 300 MB alone), which says nothing
// of what the pipeline holds.
const heapBound = 384 << 20

// One private ClickHouse for the package, in a directory that is kept so that
// TestClickHouseOutage can stop it and start it again on the same data and ports.
var (
	chSrv *chserver.Server
	chDir string
)

func TestMain(m *testing.M) {
	if _, err := chserver.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the fault tests need a real ClickHouse: %v\n", err)
		os.Exit(1)
	}
	var err error
	if chDir, err = os.MkdirTemp("", "iotwatch-faults-clickhouse-"); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	if chSrv, err = chserver.Start(context.Background(), chserver.Options{Dir: chDir}); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a private clickhouse-server: %v\n", err)
		os.RemoveAll(chDir)
		os.Exit(1)
	}
	code := m.Run()
	chSrv.Stop()
	os.RemoveAll(chDir)
	os.Exit(code)
}

var discard = slog.New(slog.DiscardHandler)

// rig is one test's servers and clients: an embedded NATS server on a kept
// store (so it can be restarted), the test's own client (publishing, watching
// the consumer), the pipeline's client, and a ClickHouse database.
type rig struct {
	t        *testing.T
	db       string
	natsDir  string
	natsPort int
	ns       *natsserver.Server
	streams  bus.StreamsConfig
	js       jetstream.JetStream // the test's client
	pjs      jetstream.JetStream // the pipeline's client
	cons     jetstream.Consumer  // the pipeline's handle on its durable consumer
	pub      *sink.NATSPublisher
	ch       *sink.ClickHouse
}

func newRig(t *testing.T, db string, ackWait time.Duration) *rig {
	t.Helper()
	ctx := context.Background()
	r := &rig{t: t, db: db, natsDir: t.TempDir()}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: r.natsDir})
	if err != nil {
		t.Fatal(err)
	}
	r.ns, r.natsPort = ns, ns.Port()
	t.Cleanup(func() { r.ns.Shutdown() })
	r.streams = bus.DefaultStreamsConfig()
	r.streams.AckWait = ackWait
	nc, js, err := bus.Connect(ctx, ns.URL(), "faults-test", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r.js = js
	if _, _, err := bus.Ensure(ctx, js, r.streams); err != nil {
		t.Fatal(err)
	}
	return r
}

// connectPipeline gives the in-process pipeline its own NATS client and the
// ClickHouse writer.
func (r *rig) connectPipeline() {
	t := r.t
	ctx := context.Background()
	nc, pjs, err := bus.Connect(ctx, r.ns.URL(), "faults-pipeline", discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cons, kv, err := bus.Ensure(ctx, pjs, r.streams)
	if err != nil {
		t.Fatal(err)
	}
	r.pjs, r.cons, r.pub = pjs, cons, sink.NewNATSPublisher(pjs, kv, discard)
	r.ch = openCH(t, r.db)
}

func openCH(t *testing.T, db string) *sink.ClickHouse {
	t.Helper()
	ch, err := sink.OpenClickHouse(context.Background(), sink.ClickHouseConfig{DSN: chSrv.DSN(), Database: db, Log: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if err := ch.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ch
}

// lag is the consumer's lag in messages: not yet delivered plus delivered and unacked.
func (r *rig) lag() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cons, err := r.js.Consumer(ctx, schemas.StreamLogs, schemas.ConsumerPipeline)
	if err != nil {
		return 0, err
	}
	info := cons.CachedInfo()
	return info.NumPending + uint64(info.NumAckPending), nil
}

func (r *rig) consumerInfo() *jetstream.ConsumerInfo {
	r.t.Helper()
	cons, err := r.js.Consumer(context.Background(), schemas.StreamLogs, schemas.ConsumerPipeline)
	if err != nil {
		r.t.Fatal(err)
	}
	return cons.CachedInfo()
}

// start runs a pipeline in-process; stop ends it and checks that it drained cleanly.
func (r *rig) start(cfg pipeline.Config) (p *pipeline.Pipeline, stop func()) {
	t := r.t
	t.Helper()
	cfg.AckWait = r.streams.AckWait
	p, err := pipeline.New(cfg, r.cons, r.ch, r.pub, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("pipeline did not drain cleanly: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return p, stop
}

var base = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

// eventLine is event i of a steady fleet: device i%devices, one event per device
// per second of event time.
func eventLine(b *bytes.Buffer, i, devices int) {
	d := i % devices
	at := base.Add(time.Duration(i/devices)*time.Second + time.Duration(d)*time.Millisecond)
	var scratch [48]byte
	id := strconv.AppendInt(scratch[:0], int64(d), 10)
	b.WriteString(`{"ts":"`)
	b.Write(at.AppendFormat(scratch[len(id):len(id)], time.RFC3339Nano))
	b.WriteString(`","src":"gateway","tenant":"acme","device":"dev-`)
	b.Write(id)
	b.WriteString(`","class":"meter/m1","api_key":"key-`)
	b.Write(id)
	b.WriteString(`","ip":"203.0.113.9","country":"DE","method":"POST","path":"/v1/devices/dev-`)
	b.Write(id)
	b.WriteString(`/readings","status":200,"auth":"ok"}`)
}

// steady returns the generator of messages whose message k holds events
// [k*lines, (k+1)*lines) of a steady fleet.
func steady(lines, devices int) func(k int) []byte {
	return func(k int) []byte { return message(k, lines, devices) }
}

func message(k, lines, devices int) []byte {
	var b bytes.Buffer
	for i := k * lines; i < (k+1)*lines; i++ {
		if i > k*lines {
			b.WriteByte('\n')
		}
		eventLine(&b, i, devices)
	}
	return b.Bytes()
}

var subject = bus.LogSubject(schemas.FormatJSON, "faults")

// publish stores one message, retrying (same message id, so JetStream keeps
// one copy) while the server is unreachable, for at most a minute.
func publish(js jetstream.JetStream, k int, data []byte) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.Publish(ctx, subject, data, jetstream.WithMsgID(fmt.Sprint("m-", k)))
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cannot publish message %d: %w", k, err)
		}
		time.Sleep(100 * time.Millisecond) // back-off between attempts
	}
}

// publisher publishes msgs messages at a steady rate (one every interval; 0:
// as fast as the server takes them) in the background. wait returns its error
// once all are published.
func publisher(js jetstream.JetStream, msgs int, gen func(k int) []byte, interval time.Duration) (published *atomic.Int64, wait func() error) {
	published = new(atomic.Int64)
	done := make(chan error, 1)
	go func() {
		start := time.Now()
		for k := range msgs {
			if interval > 0 {
				if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
					time.Sleep(d) // the publishing schedule, not a wait for work
				}
			}
			if err := publish(js, k, gen(k)); err != nil {
				done <- err
				return
			}
			published.Add(1)
		}
		done <- nil
	}()
	return published, func() error { return <-done }
}

// heapSampler records the largest live heap and HeapInuse of the process,
// every 100 ms.
type heapSampler struct {
	max   atomic.Uint64 // the live heap's maximum in the window
	inuse atomic.Uint64 // HeapInuse's, for the log
	// lastInuse is HeapInuse's maximum in the window reset ended.
	lastInuse uint64
	stop      chan struct{}
	done      chan struct{}
}

// sampleHeap collects the garbage first: the process runs the package's
// tests one after another, and what an earlier test left unreachable (a
// ClickHouse outage's buffered rows, 400+ MB) is not this test's memory,
// but counted in HeapInuse until a collection sweeps it (TestNATSRestart
// measured 528 MB after TestClickHouseOutage, 287 MB alone).
func sampleHeap(t *testing.T) *heapSampler {
	runtime.GC()
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		raise := func(m *atomic.Uint64, v uint64) {
			for cur := m.Load(); v > cur && !m.CompareAndSwap(cur, v); cur = m.Load() {
			}
		}
		for {
			runtime.ReadMemStats(&ms)
			metrics.Read(live)
			raise(&h.max, live[0].Value.Uint64())
			raise(&h.inuse, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(h.end)
	return h
}

// reset starts a new window and returns the previous window's maximum live
// heap; HeapInuse's maximum is logged.
func (h *heapSampler) reset() uint64 {
	h.lastInuse = h.inuse.Swap(0)
	return h.max.Swap(0)
}

func (h *heapSampler) end() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	<-h.done
}

// waitFor polls cond every 20 ms until it holds. It fails the test when
// cond's state has not changed for timeout (a hang: a pipeline making
// progress reports a new lag, count or phase), or after stallRounds times
// timeout in all (a bound on a state that changes without converging): on a
// busy machine, slow progress is not a failure.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	last, changed := "", start
	for {
		ok, state := cond()
		if ok {
			return
		}
		now := time.Now()
		if state != last {
			last, changed = state, now
		}
		if now.Sub(changed) > timeout {
			t.Fatalf("%s: no progress for %s (%s)", what, timeout, state)
		}
		if now.Sub(start) > stallRounds*timeout {
			t.Fatalf("%s: not reached within %s (%s)", what, stallRounds*timeout, state)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition
	}
}

// stallRounds bounds waitFor's total wait, in units of its stall timeout.
const stallRounds = 5

// waitAcks waits until p acks a message it had not acked when called, and
// returns how long after up that was.
func waitAcks(t *testing.T, p *pipeline.Pipeline, up time.Time, timeout time.Duration, what string) time.Duration {
	t.Helper()
	before := p.M.Acked.Load()
	var resumed time.Duration
	waitFor(t, timeout, what, func() (bool, string) {
		if n := p.M.Acked.Load(); n > before {
			resumed = time.Since(up)
			return true, ""
		}
		return false, fmt.Sprintf("acked %d", p.M.Acked.Load())
	})
	return resumed
}

// caughtUp is a waitFor condition: the consumer has nothing pending or unacked.
func (r *rig) caughtUp() (bool, string) {
	lag, err := r.lag()
	if err != nil {
		return false, err.Error()
	}
	return lag == 0, fmt.Sprintf("lag %d messages", lag)
}

// rowCounts returns, for one table: rows as queries see them (FINAL), raw rows
// (before background merges collapse rewrites), and distinct ids.
type rowCounts struct{ final, raw, distinct uint64 }

func counts(t *testing.T, db, table, idCol string) rowCounts {
	t.Helper()
	conn := queryConn(t)
	defer conn.Close()
	ctx := context.Background()
	var c rowCounts
	q := func(query string, dst *uint64) {
		if err := conn.QueryRow(ctx, query).Scan(dst); err != nil {
			t.Fatalf("cannot query %q: %v", query, err)
		}
	}
	q(fmt.Sprintf("SELECT count() FROM %s.%s FINAL", db, table), &c.final)
	q(fmt.Sprintf("SELECT count() FROM %s.%s", db, table), &c.raw)
	q(fmt.Sprintf("SELECT uniqExact(%s) FROM %s.%s", idCol, db, table), &c.distinct)
	return c
}

// optimizedCount merges every part of a table (OPTIMIZE ... FINAL) and counts
// its rows without FINAL: a duplicate that only FINAL hides would show here.
func optimizedCount(t *testing.T, db, table string) uint64 {
	t.Helper()
	conn := queryConn(t)
	defer conn.Close()
	ctx := context.Background()
	count := func(final string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s %s", db, table, final)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// ClickHouse 18.16 skips OPTIMIZE silently while a background merge holds
	// the parts: try again a few times until the parts are merged.
	var n uint64
	for range 20 {
		if err := conn.Exec(ctx, fmt.Sprintf("OPTIMIZE TABLE %s.%s FINAL", db, table)); err != nil {
			t.Fatalf("cannot optimize %s.%s: %v", db, table, err)
		}
		if n = count(""); n == count("FINAL") {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return n
}

func queryConn(t *testing.T) clickhouse.Conn {
	t.Helper()
	opts, err := clickhouse.ParseDSN(chSrv.DSN())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// checkScoredExactlyOnce asserts that ClickHouse holds each of want events once.
func checkScoredExactlyOnce(t *testing.T, db string, want uint64) rowCounts {
	t.Helper()
	c := counts(t, db, schemas.TableScored, schemas.ColEventID)
	if c.final != want || c.distinct != want {
		t.Errorf("ClickHouse holds %d scored rows with FINAL, %d distinct event ids; want %d (raw rows %d)", c.final, c.distinct, want, c.raw)
	}
	if n := optimizedCount(t, db, schemas.TableScored); n != want {
		t.Errorf("after OPTIMIZE FINAL, %d scored rows; want %d", n, want)
	}
	return c
}

const mb = 1 << 20

// TestClickHouseOutage stops ClickHouse for 30 s while events keep arriving,
// then starts it again on the same data and ports. The pipeline must keep
// deciding while rows wait within their bound (pipeline.Config.MaxWaitingBytes;
// beyond it fetching pauses), report the outage, keep its
// fetched messages alive (no redelivery, so no event counted twice), and
// resume by itself: every event exactly once in ClickHouse.
func TestClickHouseOutage(t *testing.T) {
	const (
		msgs, lines, devices = 1000, 100, 1000
		outage               = 30 * time.Second
		want                 = msgs * lines
	)
	r := newRig(t, "faults_ch_outage", 10*time.Second) // the outage lasts three ack waits
	r.connectPipeline()
	heap := sampleHeap(t)
	p, stop := r.start(pipeline.Config{Workers: 2, FlushInterval: 100 * time.Millisecond})
	// 100k events over ~36 s: the outage starts after ~10% and the publisher ends before it does.
	published, publishedWait := publisher(r.js, msgs, steady(lines, devices), 36*time.Millisecond)
	waitFor(t, 30*time.Second, "pipeline acks its first 100 messages", func() (bool, string) {
		return p.M.Acked.Load() >= 100, fmt.Sprintf("acked %d", p.M.Acked.Load())
	})

	heapBefore := heap.reset()
	down := time.Now()
	tcp, http := chSrv.TCPPort(), chSrv.HTTPPort()
	if err := chSrv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Since(down)
	rowsAtStop, ackedAtStop, sentAtStop := p.M.Rows.Load(), p.M.Acked.Load(), published.Load()
	time.Sleep(outage - stopped) // the fault's duration
	rowsDuringOutage := p.M.Rows.Load() - rowsAtStop
	sentDuringOutage := published.Load() - sentAtStop
	var err error
	chSrv, err = chserver.Start(context.Background(), chserver.Options{Dir: chDir, TCPPort: tcp, HTTPPort: http})
	if err != nil {
		t.Fatalf("cannot restart clickhouse-server on its data and ports: %v", err)
	}
	up := time.Now()
	heapOutage := heap.reset()
	ackedAtUp := p.M.Acked.Load()
	resumed := waitAcks(t, p, up, 2*time.Minute, "pipeline writes again after ClickHouse is back")
	if err := publishedWait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "pipeline catches up after the outage", r.caughtUp)
	caughtUp := time.Since(up)
	heapAfter := heap.reset()
	stop()

	info := r.consumerInfo()
	c := checkScoredExactlyOnce(t, r.db, want)
	if got := p.M.Events.Load(); got != want {
		t.Errorf("the pipeline scored %d events for %d published: %d redelivered events were counted twice in the baselines (consumer redelivered %d messages)",
			got, want, int64(got)-want, info.NumRedelivered)
	}
	if sentDuringOutage == 0 {
		t.Error("no message was published during the outage: the test did not load the pipeline")
	}
	if ackedDuring := ackedAtUp - ackedAtStop; ackedDuring > 0 {
		// Batches whose insert succeeded just before the stop may be acked after it.
		t.Logf("%d messages acked after the stop began", ackedDuring)
	}
	retries := r.ch.Stats().Retries
	if retries == 0 {
		t.Error("the ClickHouse writer counted no failed attempt during a 30 s outage")
	}
	if p.SinkErrors() == 0 {
		t.Errorf("the pipeline's %s stayed 0 during a 30 s ClickHouse outage (the writer retried %d times): operators scraping /metrics do not see the outage",
			schemas.MetricSinkErrors, retries)
	}
	for _, h := range []struct {
		what string
		v    uint64
	}{{"before", heapBefore}, {"during", heapOutage}, {"after", heapAfter}} {
		if h.v > heapBound {
			t.Errorf("the live heap reached %d MB %s the outage; bound %d MB", h.v/mb, h.what, heapBound/mb)
		}
	}
	t.Logf("RESULT clickhouse-outage: sent %d events (%d during the %s outage), rows FINAL %d, raw %d (duplicates written %d, collapsed), distinct %d; "+
		"scored %d (redelivered messages %d); rows written during outage %d; writer retries %d, pipeline sink_errors %d, in-progress notices %d; "+
		"resumed %.1fs after ClickHouse was back, caught up after %.1fs; max live heap before/during/after %d/%d/%d MB",
		want, sentDuringOutage*lines, outage, c.final, c.raw, c.raw-c.final, c.distinct, p.M.Events.Load(), info.NumRedelivered,
		rowsDuringOutage, retries, p.SinkErrors(), p.M.InProgress.Load(),
		resumed.Seconds(), caughtUp.Seconds(), heapBefore/mb, heapOutage/mb, heapAfter/mb)
}

// TestNATSRestart restarts the NATS server (same store, same port) while the
// pipeline consumes and the publisher keeps publishing: the pipeline's client
// reconnects, its consumer resumes, and every event is once in ClickHouse.
func TestNATSRestart(t *testing.T) {
	const (
		msgs, lines, devices = 600, 100, 1000
		downFor              = 5 * time.Second
		want                 = msgs * lines
	)
	r := newRig(t, "faults_nats_restart", 10*time.Second)
	r.connectPipeline()
	heap := sampleHeap(t)
	p, stop := r.start(pipeline.Config{Workers: 2, FlushInterval: 100 * time.Millisecond})
	published, publishedWait := publisher(r.js, msgs, steady(lines, devices), 20*time.Millisecond) // ~12 s
	waitFor(t, 30*time.Second, "pipeline acks its first 100 messages", func() (bool, string) {
		return p.M.Acked.Load() >= 100, fmt.Sprintf("acked %d", p.M.Acked.Load())
	})
	sentAtStop := published.Load()
	r.ns.Shutdown()
	time.Sleep(downFor) // the fault's duration
	ns, err := natsserver.Start(natsserver.Options{StoreDir: r.natsDir, Port: r.natsPort})
	if err != nil {
		t.Fatalf("cannot restart NATS on its store and port: %v", err)
	}
	r.ns = ns
	up := time.Now()
	resumed := waitAcks(t, p, up, time.Minute, "pipeline acks again after NATS is back")
	if err := publishedWait(); err != nil {
		t.Fatal(err)
	}
	published_ := time.Since(up)
	waitFor(t, 2*time.Minute, "pipeline catches up after the restart", r.caughtUp)
	caughtUp := time.Since(up)
	stop()

	info := r.consumerInfo()
	c := checkScoredExactlyOnce(t, r.db, want)
	stream, err := r.js.Stream(context.Background(), schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	if si, err := stream.Info(context.Background()); err != nil || si.State.Msgs != msgs {
		t.Errorf("the logs stream holds %v messages (%v), want %d", si.State.Msgs, err, msgs)
	}
	if heapMax := heap.reset(); heapMax > heapBound {
		t.Errorf("the live heap reached %d MB (HeapInuse %d MB); bound %d MB", heapMax/mb, heap.lastInuse/mb, heapBound/mb)
	} else {
		t.Logf("max live heap %d MB (HeapInuse %d MB)", heapMax/mb, heap.lastInuse/mb)
	}
	t.Logf("RESULT nats-restart: sent %d events (%d before the restart), rows FINAL %d, raw %d (duplicates written %d, collapsed), distinct %d; "+
		"scored %d (%d counted twice after redelivery; consumer redelivered %d messages); NATS down %s; "+
		"pipeline acked again %.2fs after NATS was back; publisher done after %.1fs, lag 0 after %.1fs",
		want, sentAtStop*lines, c.final, c.raw, c.raw-c.final, c.distinct, p.M.Events.Load(), int64(p.M.Events.Load())-want, info.NumRedelivered,
		downFor, resumed.Seconds(), published_.Seconds(), caughtUp.Seconds())
}

// TestOverload publishes far faster than the pipeline consumes, in large
// messages, with few events in flight: the lag grows and is visible on the
// consumer, memory stays bounded, and the pipeline catches up without a crash.
func TestOverload(t *testing.T) {
	const (
		msgs, lines, devices = 300, 1000, 5000
		want                 = msgs * lines
	)
	r := newRig(t, "faults_overload", 30*time.Second)
	r.connectPipeline()
	heap := sampleHeap(t)
	p, stop := r.start(pipeline.Config{Workers: 2, MaxInFlight: 2048, FetchBatch: 16, FlushInterval: 100 * time.Millisecond})
	start := time.Now()
	_, publishedWait := publisher(r.js, msgs, steady(lines, devices), 0)

	var maxLag uint64
	var publishedIn time.Duration
	pubDone := make(chan error, 1)
	go func() { pubDone <- publishedWait() }()
	waitFor(t, 3*time.Minute, "pipeline catches up with the overload", func() (bool, string) {
		lag, err := r.lag()
		if err != nil {
			return false, err.Error()
		}
		maxLag = max(maxLag, lag)
		if publishedIn == 0 {
			select {
			case err := <-pubDone:
				if err != nil {
					t.Fatal(err)
				}
				publishedIn = time.Since(start)
			default:
				return false, fmt.Sprintf("publishing, lag %d messages", lag)
			}
		}
		return lag == 0, fmt.Sprintf("lag %d messages", lag)
	})
	caughtUp := time.Since(start)
	heapMax := heap.reset()
	stop()

	c := checkScoredExactlyOnce(t, r.db, want)
	if got := p.M.Events.Load(); got != want {
		t.Errorf("the pipeline scored %d events for %d published", got, want)
	}
	// More than the pipeline holds (a fetch of 16 messages, 2048 events in flight): the backlog was on the server.
	if maxLag < 20 {
		t.Errorf("the consumer's lag peaked at %d messages: the input did not exceed the pipeline's capacity", maxLag)
	}
	if heapMax > heapBound {
		t.Errorf("the live heap reached %d MB (HeapInuse %d MB); bound %d MB", heapMax/mb, heap.lastInuse/mb, heapBound/mb)
	}
	t.Logf("RESULT overload: sent %d events in %d messages in %.1fs (%.0f events/s), pipeline caught up after %.1fs (%.0f events/s); "+
		"peak lag %d messages (%d events); rows FINAL %d, raw %d (duplicates written %d), distinct %d; scored %d; max live heap %d MB (HeapInuse %d MB)",
		want, msgs, publishedIn.Seconds(), float64(want)/publishedIn.Seconds(), caughtUp.Seconds(), float64(want)/caughtUp.Seconds(),
		maxLag, maxLag*lines, c.final, c.raw, c.raw-c.final, c.distinct, p.M.Events.Load(), heapMax/mb, heap.lastInuse/mb)
}

// floodMessage k is steady traffic from 200 meters (one event a minute each,
// minute k) and, from minute 120 on, a flood from dev-0 to dev-4 (300 events a
// minute each), so that alerts and decisions are raised around the kill.
func floodMessage(k int) []byte {
	var b bytes.Buffer
	add := func(device string, at time.Duration) {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, `{"ts":%q,"src":"gateway","tenant":"acme","device":%q,"class":"meter/m1","api_key":"key-%s","ip":"203.0.113.9","country":"DE","method":"POST","path":"/v1/devices/%s/readings","status":200,"auth":"ok"}`,
			base.Add(at).Format(time.RFC3339Nano), device, device, device)
	}
	minute := time.Duration(k) * time.Minute
	for d := range 200 {
		add(fmt.Sprint("dev-", d), minute+time.Duration(d)*100*time.Millisecond)
	}
	if k >= 120 {
		for i := range 300 {
			add(fmt.Sprint("dev-", i%5), minute+time.Duration(i)*200*time.Millisecond)
		}
	}
	return b.Bytes()
}

func floodEvents(msgs int) int {
	return msgs*200 + max(0, msgs-120)*300
}

// child is an `iotwatch run` process.
type child struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // its exit status, once done is closed
}

func startChild(t *testing.T, bin string, args []string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(bin, args...), stderr: new(bytes.Buffer), done: make(chan struct{})}
	c.cmd.Stderr = &syncWriter{w: c.stderr}
	c.cmd.Stdout = c.cmd.Stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.err = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (c *child) output() string {
	w := c.cmd.Stderr.(*syncWriter)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

// buildIotwatch builds cmd/iotwatch into dir.
func buildIotwatch(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "iotwatch")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/iotwatch")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build cmd/iotwatch: %v\n%s", err, out)
	}
	return bin
}

var (
	restoredRe = regexp.MustCompile(`msg="restored checkpoint".* devices=(\d+) .*stream_seq=(\d+)`)
	catchUpRe  = regexp.MustCompile(`msg="catching up after the checkpoint" from_seq=(\d+) to_seq=(\d+)`)
)

// TestKillPipeline kills `iotwatch run` with SIGKILL mid-stream and starts it
// again with the same checkpoint: every event is once in ClickHouse, alerts
// and decisions are not duplicated, and the baselines are intact: the final
// state of every device is byte for byte the state of a control run that
// consumed the same messages without a crash, and the alerts and decisions
// are the control run's, the same ids in ClickHouse and on NATS (issue 13:
// restarts multiplied them, as cool-downs and blocks were not checkpointed
// and redelivered events were judged against records that had moved on). (One worker in both, so that
// the class statistics each event sees are the same in both runs.)
func TestKillPipeline(t *testing.T) {
	const msgs = 180
	want := uint64(floodEvents(msgs))
	tmp := t.TempDir()
	bin := buildIotwatch(t, tmp)
	r := newRig(t, "faults_kill", 4*time.Second)
	ckpt := filepath.Join(tmp, "state.ckpt")
	args := r.runArgs(ckpt)

	published, publishedWait := publisher(r.js, msgs, floodMessage, 50*time.Millisecond) // ~9 s
	first := startChild(t, bin, args)
	// Kill it once it has acked part of the flood section and has written a periodic checkpoint.
	waitFor(t, time.Minute, "first pipeline acks 130 messages", func() (bool, string) {
		info, err := r.js.Consumer(context.Background(), schemas.StreamLogs, schemas.ConsumerPipeline)
		if err != nil {
			return false, err.Error()
		}
		_, statErr := os.Stat(ckpt)
		ack := info.CachedInfo().AckFloor.Stream
		return ack >= 130 && statErr == nil, fmt.Sprintf("ack floor %d, checkpoint: %v", ack, statErr)
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-first.done
	sentAtKill := published.Load()
	atKill := r.consumerInfo()

	second := startChild(t, bin, args)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("restarted pipeline's output:\n%s", tail(second.output()))
		}
	})
	if err := publishedWait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "restarted pipeline catches up", r.caughtUp)
	caughtUp := time.Since(killed)
	info := r.consumerInfo()
	second.stop(t, "restarted pipeline")

	c := checkScoredExactlyOnce(t, r.db, want)
	alerts := counts(t, r.db, schemas.TableAlerts, schemas.ColID)
	decisions := counts(t, r.db, schemas.TableDecisions, schemas.ColID)
	if alerts.final == 0 {
		t.Error("no alert was raised: the test does not check alert duplication")
	}
	if alerts.final != alerts.distinct {
		t.Errorf("alerts: %d rows with FINAL for %d distinct ids: duplicated alerts", alerts.final, alerts.distinct)
	}
	if decisions.final != decisions.distinct {
		t.Errorf("decisions: %d rows with FINAL for %d distinct ids: duplicated decisions", decisions.final, decisions.distinct)
	}
	// Alerts and decisions are published as soon as they are decided, rows
	// follow with their message's ack. A message the killed pipeline scored
	// but never acked is redelivered, and a redelivered event gets the alerts
	// it got the first time or none (ARCHITECTURE, Redelivery): so NATS may
	// hold alerts the killed process published whose rows it never wrote. It
	// must hold every stored one, and everything the restarted pipeline
	// published must be stored.
	streamAlerts := publishedUnstored(t, r.js, schemas.StreamAlerts, r.db, schemas.TableAlerts, killed)
	streamDecisions := publishedUnstored(t, r.js, schemas.StreamDecisions, r.db, schemas.TableDecisions, killed)
	m := restoredRe.FindStringSubmatch(second.output())
	if m == nil {
		t.Errorf("the restarted pipeline restored no checkpoint:\n%s", tail(second.output()))
		m = []string{"", "0", "0"}
	}
	catchUp := "none"
	if cu := catchUpRe.FindStringSubmatch(second.output()); cu != nil {
		catchUp = cu[1] + ".." + cu[2]
	}
	control := controlRun(t, bin, msgs)
	got := readRecords(t, ckpt)
	compareRecords(t, got, control.records)
	testids.Compare(t, "alerts in ClickHouse", "after the kill", storedIDs(t, r.db, schemas.TableAlerts), control.alerts)
	testids.Compare(t, "decisions in ClickHouse", "after the kill", storedIDs(t, r.db, schemas.TableDecisions), control.decisions)
	testids.Compare(t, "alerts on NATS", "after the kill", streamIDs(t, r.js, schemas.StreamAlerts), control.natsAlerts)
	testids.Compare(t, "decisions on NATS", "after the kill", streamIDs(t, r.js, schemas.StreamDecisions), control.natsDecisions)
	t.Logf("RESULT kill-9: control run without a crash: alerts %d, decisions %d", len(control.alerts), len(control.decisions))
	t.Logf("RESULT kill-9: alerts on NATS only, published by the killed process for messages it never acked: %d of %d; decisions: %d of %d",
		streamAlerts.onlyNATS, streamAlerts.published, streamDecisions.onlyNATS, streamDecisions.published)
	t.Logf("RESULT kill-9: sent %d events (%d messages, %d published at the kill; ack floor %d, %d ack pending at the kill); "+
		"rows FINAL %d, raw %d (duplicates written %d, collapsed), distinct %d; alerts FINAL %d / distinct ids %d / on NATS %d (raw %d); "+
		"decisions FINAL %d / distinct %d / on NATS %d (raw %d); consumer redelivered %d messages; "+
		"restart restored %s devices at stream seq %s (periodic checkpoint every 1s), judged stream seqs %s again; "+
		"final baselines of %d devices identical to a run without a crash; caught up %.1fs after the kill",
		want, msgs, sentAtKill, atKill.AckFloor.Stream, atKill.NumAckPending, c.final, c.raw, c.raw-c.final, c.distinct,
		alerts.final, alerts.distinct, streamAlerts, alerts.raw, decisions.final, decisions.distinct, streamDecisions, decisions.raw,
		info.NumRedelivered, m[1], m[2], catchUp, len(got), caughtUp.Seconds())
}

// runArgs are the arguments of the kill test's `iotwatch run` on r's servers.
func (r *rig) runArgs(ckpt string) []string {
	return []string{"run", "--nats", r.ns.URL(), "--clickhouse", chSrv.DSN(), "--database", r.db,
		"--checkpoint", ckpt, "--checkpoint-every", "1s", "--ack-wait", r.streams.AckWait.String(),
		"--workers", "1", "--flush-interval", "100ms"}
}

// controlResults are a control run's final device records and the ids of
// its alerts and decisions (sorted), in ClickHouse and on NATS.
type controlResults struct {
	records                                      map[[2]uint64][]byte
	alerts, decisions, natsAlerts, natsDecisions []string
}

// controlRun consumes the same messages with the same flags on fresh servers,
// without a crash, and returns its results.
func controlRun(t *testing.T, bin string, msgs int) controlResults {
	t.Helper()
	r := newRig(t, "faults_kill_control", 4*time.Second)
	ckpt := filepath.Join(t.TempDir(), "control.ckpt")
	args := r.runArgs(ckpt)
	_, publishedWait := publisher(r.js, msgs, floodMessage, 0)
	if err := publishedWait(); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, bin, args)
	waitFor(t, 2*time.Minute, "control pipeline catches up", r.caughtUp)
	c.stop(t, "control pipeline")
	return controlResults{records: readRecords(t, ckpt),
		alerts: storedIDs(t, r.db, schemas.TableAlerts), decisions: storedIDs(t, r.db, schemas.TableDecisions),
		natsAlerts: streamIDs(t, r.js, schemas.StreamAlerts), natsDecisions: streamIDs(t, r.js, schemas.StreamDecisions)}
}

// storedIDs returns the distinct ids of a ClickHouse table, sorted.
func storedIDs(t *testing.T, db, table string) []string {
	t.Helper()
	conn := queryConn(t)
	defer conn.Close()
	return pipetest.IDs(t, conn, db, table)
}

// streamIDs returns the distinct ids of the alerts or decisions (not
// receipts) a results stream holds, sorted.
func streamIDs(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for seq := si.State.FirstSeq; seq <= si.State.LastSeq && si.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("cannot read %s message %d: %v", stream, seq, err)
		}
		if m.Subject == schemas.SubjectDecisionsApplied {
			continue // an enforcer's receipt
		}
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Data, &v); err != nil || v.ID == "" {
			t.Fatalf("%s message %d on %s is no alert or decision: %q (%v)", stream, seq, m.Subject, m.Data, err)
		}
		seen[v.ID] = true
	}
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// readRecords reads the device records of a checkpoint.
func readRecords(t *testing.T, path string) map[[2]uint64][]byte {
	t.Helper()
	layout, err := worker.NewLayout(nil)
	if err != nil {
		t.Fatal(err)
	}
	recs := map[[2]uint64][]byte{}
	_, err = checkpoint.Read(path, checkpoint.MetaOf(layout),
		func(key, alt uint64, _ int64, rec []byte) { recs[[2]uint64{key, alt}] = bytes.Clone(rec) },
		detectors.NewClassModel(layout.Detectors, detectors.NewClassTable(1<<18, 1<<12))) // the sizes the pipeline uses
	if err != nil {
		t.Fatalf("cannot read checkpoint: %v", err)
	}
	return recs
}

// compareRecords fails t unless got and want hold the same devices with the
// same records.
func compareRecords(t *testing.T, got, want map[[2]uint64][]byte) {
	t.Helper()
	if len(want) == 0 {
		t.Fatal("the control run has no device records: nothing to compare")
	}
	differ := 0
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("device %x: in the control run's state, not in the restarted run's", k[0])
		case !bytes.Equal(g, w):
			if differ++; differ <= 3 {
				t.Errorf("device %x: baseline differs from the control run's after the crash and restart:\n got %x\nwant %x", k[0], g, w)
			}
		}
	}
	if differ > 3 {
		t.Errorf("... %d devices differ in all", differ)
	}
	if len(got) != len(want) {
		t.Errorf("restarted run holds %d devices, control %d", len(got), len(want))
	}
}

// stop sends SIGTERM and fails t unless the child exits cleanly within a minute.
func (c *child) stop(t *testing.T, what string) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
		if c.err != nil {
			t.Fatalf("%s did not stop cleanly: %v\n%s", what, c.err, tail(c.output()))
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGTERM\n%s", what, tail(c.output()))
	}
}

// tail returns the end of a child's output, for failure messages.
func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// published counts what a results stream holds against a ClickHouse table.
type published struct{ published, onlyNATS int }

// publishedUnstored compares the alerts or decisions (blocks, not receipts)
// of stream with the ids stored in table: every stored id must have been
// published, and an id published but not stored must have been published
// before killed (by the killed process, for a message it never acked).
func publishedUnstored(t *testing.T, js jetstream.JetStream, stream, db, table string, killed time.Time) published {
	t.Helper()
	ctx := context.Background()
	stored := map[string]bool{}
	for _, id := range storedIDs(t, db, table) {
		stored[id] = true
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var p published
	seen := map[string]bool{}
	for seq := si.State.FirstSeq; seq <= si.State.LastSeq && si.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("cannot read %s message %d: %v", stream, seq, err)
		}
		if m.Subject == schemas.SubjectDecisionsApplied {
			continue // an enforcer's receipt
		}
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Data, &v); err != nil || v.ID == "" {
			t.Fatalf("%s message %d on %s is no alert or decision: %q (%v)", stream, seq, m.Subject, m.Data, err)
		}
		if seen[v.ID] {
			continue
		}
		seen[v.ID] = true
		p.published++
		if stored[v.ID] {
			continue
		}
		p.onlyNATS++
		if !m.Time.Before(killed) {
			t.Errorf("%s: %s was published after the restart (%s) but is not in ClickHouse", stream, v.ID, m.Time.Format(time.RFC3339Nano))
		}
	}
	for id := range stored {
		if !seen[id] {
			t.Errorf("%s: ClickHouse holds %s, which was never published", table, id)
		}
	}
	return p
}
