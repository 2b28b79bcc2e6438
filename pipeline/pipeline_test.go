package pipeline_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// One private ClickHouse for the package: starting one takes seconds.
var chDSN string

func TestMain(m *testing.M) {
	if _, err := chserver.Available(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the pipeline integration tests need a real ClickHouse: %v\n", err)
		os.Exit(1)
	}
	srv, err := chserver.Start(context.Background(), chserver.Options{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a private clickhouse-server: %v\n", err)
		os.Exit(1)
	}
	chDSN = srv.DSN()
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

type env struct {
	js   jetstream.JetStream
	cons pipeline.Source
	ch   *sink.ClickHouse
	conn clickhouse.Conn
	db   string
	pub  *sink.NATSPublisher
}

func setup(t *testing.T, db string) *env {
	t.Helper()
	return setupOn(t, db, chDSN)
}

// setupOn is setup with the ClickHouse server at dsn.
func setupOn(t *testing.T, db, dsn string) *env {
	t.Helper()
	e := pipetest.Setup(t, dsn, db)
	return &env{js: e.JS, cons: e.Cons, ch: e.CH, conn: e.Conn, db: e.DB, pub: e.Pub}
}

// test is e as a pipetest.Env.
func (e *env) test() *pipetest.Env {
	return &pipetest.Env{JS: e.js, Cons: e.cons, CH: e.ch, Conn: e.conn, DB: e.db, Pub: e.pub}
}

func (e *env) count(t *testing.T, table string) uint64 { return e.test().Count(t, table) }

// run runs a pipeline until the consumer has nothing pending or unacked.
func (e *env) run(t *testing.T, cfg pipeline.Config) *pipeline.Pipeline {
	t.Helper()
	return e.test().Run(t, cfg)
}

var base = pipetest.Base

var line = pipetest.Line

// TestEndToEnd publishes a quiet device's baseline, then a flood from it and a
// few bad records, and checks every stage's output in the real servers.
func TestEndToEnd(t *testing.T) {
	e := setup(t, "e2e")
	ctx := context.Background()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	var msgs []string
	var batch []string
	good := 0
	add := func(l string, ok bool) {
		batch = append(batch, l)
		if ok {
			good++
		}
		if len(batch) == 50 {
			msgs = append(msgs, strings.Join(batch, "\n"))
			batch = nil
		}
	}
	// Two hours of one reading a minute from 20 meters, then meter-7 floods.
	for i := range 120 {
		for d := range 20 {
			add(line(fmt.Sprintf("meter-%d", d), time.Duration(i)*time.Minute+time.Duration(d)*time.Second, ""), true)
		}
	}
	for i := range 300 {
		add(line("meter-7", 120*time.Minute+time.Duration(i)*200*time.Millisecond, ""), true)
	}
	bad := []string{`{"ts":`, `{"ts":"2026-01-05T10:00:00Z"}`, `{"ts":"1970-01-01T00:00:00Z","device":"x-1"}`,
		"{\"ts\":\"2026-01-05T10:00:00Z\",\"device\":\"\xff\"}", line("big-1", 0, `,"fw":"`+strings.Repeat("x", schemas.DefaultMaxLineBytes)+`"`)}
	for _, b := range bad {
		add(b, false)
	}
	msgs = append(msgs, strings.Join(batch, "\n"))
	for i, m := range msgs {
		if _, err := e.js.Publish(ctx, subject, []byte(m), jetstream.WithMsgID(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
	}
	pub, priv, _ := ed25519.GenerateKey(nil)
	p := e.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, SigningKeyID: "k1", SigningKey: priv})

	if got := p.M.Events.Load(); got != uint64(good) {
		t.Errorf("scored %d events, want %d", got, good)
	}
	if got := e.count(t, schemas.TableScored); got != uint64(good) {
		t.Errorf("ClickHouse holds %d scored rows, want %d", got, good)
	}
	if got := p.M.Acked.Load(); got != uint64(len(msgs)) {
		t.Errorf("acked %d messages, want %d", got, len(msgs))
	}

	// Dead letters: one entry per bad line, one message per reason (the bad
	// lines are in one message), with the reason and where it came from.
	dlq, err := e.js.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := dlq.Info(ctx)
	if info.State.Msgs != uint64(len(bad)) {
		t.Errorf("DLQ holds %d messages, want %d", info.State.Msgs, len(bad))
	}
	reasons := map[string]bool{}
	var letters []schemas.DeadLetter
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		reasons[m.Header.Get(schemas.HeaderDLQReason)] = true
		if m.Header.Get(schemas.HeaderDLQSubject) != subject || m.Header.Get(schemas.HeaderDLQSequence) == "" {
			t.Errorf("dead letter lacks its origin: %v", m.Header)
		}
		if letters, err = schemas.ParseDeadLetters(letters, m.Data, m.Header.Get(schemas.HeaderDLQReason)); err != nil {
			t.Error(err)
		}
	}
	if len(letters) != len(bad) || p.M.DeadLettered.Load() != uint64(len(bad)) {
		t.Errorf("DLQ holds %d dead letters (counter %d), want %d", len(letters), p.M.DeadLettered.Load(), len(bad))
	}
	for _, d := range letters {
		if d.Reason == schemas.DeadLetterTooLarge && (!d.Truncated() || d.Size <= schemas.DefaultMaxLineBytes) {
			t.Errorf("too large line: %d of %d bytes kept, want a prefix and its whole length", len(d.Record), d.Size)
		}
	}
	for _, r := range []string{schemas.DeadLetterMalformedJSON, schemas.DeadLetterMissingField, schemas.DeadLetterTimestampOutOfRange, schemas.DeadLetterInvalidUTF8, schemas.DeadLetterTooLarge} {
		if !reasons[r] {
			t.Errorf("no dead letter with reason %q (got %v)", r, reasons)
		}
	}

	// The flood raised an alert for meter-7 and a block, in ClickHouse and on NATS.
	var device, reasonList string
	err = e.conn.QueryRow(ctx, fmt.Sprintf("SELECT device, arrayStringConcat(reasons, ',') FROM %s.%s FINAL WHERE device = 'meter-7' ORDER BY time_ms LIMIT 1", e.db, schemas.TableAlerts)).Scan(&device, &reasonList)
	if err != nil {
		t.Fatalf("no alert for the flooding meter-7: %v", err)
	}
	if !strings.Contains(reasonList, volume.ReasonRateSpike) {
		t.Errorf("meter-7 alert reasons = %q, want %s", reasonList, volume.ReasonRateSpike)
	}
	var others uint64
	e.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE device != 'meter-7'", e.db, schemas.TableAlerts)).Scan(&others)
	if others != 0 {
		t.Errorf("%d alerts on quiet meters", others)
	}
	kv, err := e.js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(ctx, schemas.KVKey(schemas.ScopeAPIKey, "key-meter-7")) // identified by its API key: the key is blocked
	if err != nil {
		var scores []float64
		rows, _ := e.conn.Query(ctx, fmt.Sprintf("SELECT score FROM %s.%s FINAL WHERE device = 'meter-7' ORDER BY time_ms", e.db, schemas.TableAlerts))
		for rows.Next() {
			var s float64
			rows.Scan(&s)
			scores = append(scores, s)
		}
		t.Fatalf("no active block for meter-7 in KV (%v); its alerts scored %v", err, scores)
	}
	var d schemas.Decision
	if err := json.Unmarshal(entry.Value(), &d); err != nil || d.Action != schemas.ActionBlock {
		t.Errorf("KV decision = %s (%v)", entry.Value(), err)
	}
	if err := schemas.VerifyDecision(&d, map[string]ed25519.PublicKey{"k1": pub}); err != nil {
		t.Errorf("the decision enforcement points read does not verify: %v", err)
	}
	if d.Revision == 0 {
		t.Errorf("the decision enforcement points read has no revision: %s", entry.Value())
	}
	// The counters operators scrape say the same.
	var metrics strings.Builder
	p.WriteMetrics(&metrics)
	for _, want := range []string{
		fmt.Sprintf("%s %d\n", schemas.MetricEventsIngested, good),
		fmt.Sprintf("%s %d\n", schemas.MetricDeadLettered, len(bad)),
		fmt.Sprintf("%s %d\n", schemas.MetricRowsWritten, good),
		fmt.Sprintf("%s %d\n", schemas.MetricMessagesAcked, len(msgs)),
		fmt.Sprintf("%s 0\n", schemas.MetricConsumerLag),
		"# TYPE " + schemas.MetricAlerts + " counter\n",
	} {
		if !strings.Contains(metrics.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics.String())
		}
	}
	for _, want := range []string{
		schemas.MetricFindings + `\{detector="[a-z]+",reason="[a-z_]+"\} [1-9]`,
		schemas.MetricFlushDuration + `_count [1-9]`,
		schemas.MetricFlushDuration + `_bucket\{le="\+Inf"\} [1-9]`,
	} {
		if !regexp.MustCompile(want).MatchString(metrics.String()) {
			t.Errorf("metrics lack %s:\n%s", want, metrics.String())
		}
	}

	alerts, _ := e.js.Stream(ctx, schemas.StreamAlerts)
	ainfo, _ := alerts.Info(ctx)
	if ainfo.State.Msgs == 0 || ainfo.State.Msgs != e.count(t, schemas.TableAlerts) {
		t.Errorf("alerts stream holds %d, ClickHouse %d: want the same, non-zero", ainfo.State.Msgs, e.count(t, schemas.TableAlerts))
	}
}

// TestRedeliveryIsIdempotent replays the whole stream through a second consumer
// position: rows and alerts must not be duplicated.
func TestRedeliveryIsIdempotent(t *testing.T) {
	e := setup(t, "redeliver")
	ctx := context.Background()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	var lines []string
	for i := range 200 {
		lines = append(lines, line(fmt.Sprintf("meter-%d", i%10), time.Duration(i)*time.Second, ""))
	}
	if _, err := e.js.Publish(ctx, subject, []byte(strings.Join(lines, "\n"))); err != nil {
		t.Fatal(err)
	}
	e.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond})
	first := e.count(t, schemas.TableScored)

	// Rewind: delete and recreate the consumer, so every message is delivered again.
	stream, _ := e.js.Stream(ctx, schemas.StreamLogs)
	if err := stream.DeleteConsumer(ctx, schemas.ConsumerPipeline); err != nil {
		t.Fatal(err)
	}
	cons, _, err := bus.Ensure(ctx, e.js, bus.DefaultStreamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	e.cons = cons
	e.run(t, pipeline.Config{Workers: 3, FlushInterval: 50 * time.Millisecond})
	if first != 200 || e.count(t, schemas.TableScored) != first {
		t.Errorf("rows after first pass %d, after redelivery %d; want 200 both times", first, e.count(t, schemas.TableScored))
	}
}

// TestGarbageMessageIsBounded: a message of garbage yields at most
// MaxBadLinesPerMessage line-by-line dead letters, then its rest whole, so
// nothing is lost and ingest is not stalled by one dead letter per line.
func TestGarbageMessageIsBounded(t *testing.T) {
	e := setup(t, "garbage")
	ctx := context.Background()
	var lines []string
	for i := range 250 {
		lines = append(lines, fmt.Sprintf("garbage %d", i))
	}
	for i := range 5 {
		lines = append(lines, line("meter-1", time.Duration(i)*time.Minute, ""))
	}
	if _, err := e.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "test"), []byte(strings.Join(lines, "\n"))); err != nil {
		t.Fatal(err)
	}
	p := e.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond})
	dlq, _ := e.js.Stream(ctx, schemas.StreamDLQ)
	info, _ := dlq.Info(ctx)
	// Two DLQ messages: the bad lines together, then the rest.
	if info.State.Msgs != 2 || p.M.DeadLettered.Load() != pipeline.MaxBadLinesPerMessage+1 {
		t.Fatalf("DLQ holds %d messages (counter %d dead letters), want 2 (%d)", info.State.Msgs, p.M.DeadLettered.Load(), pipeline.MaxBadLinesPerMessage+1)
	}
	first, err := dlq.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	letters, err := schemas.ParseDeadLetters(nil, first.Data, first.Header.Get(schemas.HeaderDLQReason))
	if err != nil || len(letters) != pipeline.MaxBadLinesPerMessage || first.Header.Get(schemas.HeaderDLQCount) != fmt.Sprint(pipeline.MaxBadLinesPerMessage) {
		t.Fatalf("first dead-letter message: %d entries (count header %q), %v; want %d", len(letters), first.Header.Get(schemas.HeaderDLQCount), err, pipeline.MaxBadLinesPerMessage)
	}
	for i, d := range letters {
		if d.Line != uint32(i) || string(d.Record) != lines[i] || d.Reason != schemas.DeadLetterMalformedJSON {
			t.Fatalf("entry %d: line %d record %q reason %q; want line %d, %q, %s", i, d.Line, d.Record, d.Reason, i, lines[i], schemas.DeadLetterMalformedJSON)
		}
	}
	last, err := dlq.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if r := last.Header.Get(schemas.HeaderDLQReason); r != schemas.DeadLetterTooManyBadLines {
		t.Errorf("last dead letter's reason = %q", r)
	}
	rest, err := schemas.ParseDeadLetters(nil, last.Data, schemas.DeadLetterTooManyBadLines)
	if err != nil || len(rest) != 1 {
		t.Fatalf("the rest: %d entries, %v; want 1", len(rest), err)
	}
	if want := strings.Join(lines[pipeline.MaxBadLinesPerMessage:], "\n"); string(rest[0].Record) != want {
		t.Errorf("the rest of the message was not kept whole: %d bytes, want %d", len(rest[0].Record), len(want))
	}
	if rest[0].Line != pipeline.MaxBadLinesPerMessage || last.Header.Get(schemas.HeaderDLQLine) != fmt.Sprint(pipeline.MaxBadLinesPerMessage) {
		t.Errorf("rest starts at line %d (header %q), want %d", rest[0].Line, last.Header.Get(schemas.HeaderDLQLine), pipeline.MaxBadLinesPerMessage)
	}
	if p.M.Acked.Load() != 1 {
		t.Errorf("acked %d messages, want 1", p.M.Acked.Load())
	}
}

// stuckRows is a ClickHouse that stopped answering: every scored-row insert
// waits until its context ends (fault injection around the real writer).
type stuckRows struct{ *sink.ClickHouse }

func (stuckRows) WriteScored(ctx context.Context, _ arrow.RecordBatch) error {
	<-ctx.Done()
	return ctx.Err()
}

// TestShutdownWithStuckSink: with the sink stuck and in-flight slots exhausted,
// a shutdown still ends within the drain timeout, acks nothing, and says why.
func TestShutdownWithStuckSink(t *testing.T) {
	e := setup(t, "stuck")
	ctx := context.Background()
	var lines []string
	for i := range 400 {
		lines = append(lines, line(fmt.Sprintf("meter-%d", i%50), time.Duration(i)*time.Second, ""))
	}
	for i := 0; i < len(lines); i += 10 {
		if _, err := e.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "test"), []byte(strings.Join(lines[i:i+10], "\n"))); err != nil {
			t.Fatal(err)
		}
	}
	// Few in-flight slots and small batches, so that ingest blocks on the stuck sink.
	p, err := pipeline.New(pipeline.Config{Workers: 2, MaxInFlight: 16, FlushRows: 8, FlushInterval: 10 * time.Millisecond,
		DrainTimeout: 500 * time.Millisecond}, e.cons, stuckRows{e.ch}, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	for p.M.Messages.Load() == 0 {
		time.Sleep(5 * time.Millisecond) // until ingest has fetched something
	}
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cannot drain") {
			t.Errorf("Run = %v, want a drain error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after shutdown with a stuck sink (deadlock)")
	}
	if n := p.M.Acked.Load(); n != 0 {
		t.Errorf("acked %d messages whose rows were never written", n)
	}
	if err := p.Run(ctx); err == nil {
		t.Error("a second Run must be refused")
	}
}

// slowRows is a ClickHouse that hangs for a while (fault injection around the
// real writer): the first scored-row insert waits for release.
type slowRows struct {
	*sink.ClickHouse
	release <-chan struct{}
}

func (s slowRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	return pipetest.SlowRows{ClickHouse: s.ClickHouse, Release: s.release}.WriteScored(ctx, rec)
}

// TestSlowSinkNoRedelivery: a sink slower than the ack wait must not get the
// waiting messages redelivered, which would count their events twice in the
// baselines: they are reported in progress instead.
func TestSlowSinkNoRedelivery(t *testing.T) {
	e := setup(t, "slow")
	ctx := context.Background()
	cfg := bus.DefaultStreamsConfig()
	cfg.AckWait = 2 * time.Second
	cons, _, err := bus.Ensure(ctx, e.js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.cons = cons
	var lines []string
	for i := range 300 {
		lines = append(lines, line(fmt.Sprintf("meter-%d", i%30), time.Duration(i)*time.Second, ""))
	}
	for i := 0; i < len(lines); i += 10 {
		if _, err := e.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "test"), []byte(strings.Join(lines[i:i+10], "\n"))); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 20 * time.Millisecond, AckWait: cfg.AckWait},
		e.cons, slowRows{e.ch, release}, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	// Hold the sink for twice the ack wait (server-side condition: in-progress notices).
	for p.M.InProgress.Load() < 30 {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * cfg.AckWait) // the fault lasts this long: a redelivery would happen within it
	close(release)
	for {
		info, err := e.cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 {
			if info.NumRedelivered != 0 {
				t.Errorf("%d messages were redelivered", info.NumRedelivered)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := p.M.Events.Load(); got != uint64(len(lines)) {
		t.Errorf("scored %d events for %d published: redelivered events were counted again", got, len(lines))
	}
	if got := e.count(t, schemas.TableScored); got != uint64(len(lines)) {
		t.Errorf("ClickHouse holds %d rows, want %d", got, len(lines))
	}
}

// TestCheckpointRestart: baselines survive a restart through the checkpoint.
// Twenty meters report for two hours; the pipeline stops cleanly; a new one
// restores the checkpoint, and a flood from meter-7 is judged against its
// baseline at once. Without the checkpoint (a cold start) the same flood is
// only learning material.
func TestCheckpointRestart(t *testing.T) {
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	publish := func(e *env, from, to int, flood bool) {
		t.Helper()
		var lines []string
		for i := from; i < to; i++ {
			for d := range 20 {
				lines = append(lines, line(fmt.Sprintf("meter-%d", d), time.Duration(i)*time.Minute+time.Duration(d)*time.Second, ""))
			}
		}
		if flood {
			for i := range 300 {
				lines = append(lines, line("meter-7", time.Duration(to)*time.Minute+time.Duration(i)*200*time.Millisecond, ""))
			}
		}
		for i := 0; i < len(lines); i += 50 {
			if _, err := e.js.Publish(context.Background(), bus.LogSubject(schemas.FormatJSON, "test"), []byte(strings.Join(lines[i:min(i+50, len(lines))], "\n"))); err != nil {
				t.Fatal(err)
			}
		}
	}
	floodAlerts := func(e *env) uint64 {
		var n uint64
		q := fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE device = 'meter-7' AND has(reasons, '%s')", e.db, schemas.TableAlerts, volume.ReasonRateSpike)
		if err := e.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	cfg := pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, Checkpoint: ckpt}

	e := setup(t, "ckpt")
	publish(e, 0, 120, false)
	first := e.run(t, cfg)
	if first.Restored().Records != 0 {
		t.Fatalf("restored %d devices from a checkpoint that did not exist", first.Restored().Records)
	}
	publish(e, 120, 121, true)
	second := e.run(t, pipeline.Config{Workers: 3, FlushInterval: 50 * time.Millisecond, Checkpoint: ckpt}) // another worker count: devices move
	if m := second.Restored(); m.Records != 20 || m.StreamSeq == 0 {
		t.Fatalf("restored %+v, want 20 devices and a stream position", m)
	}
	if floodAlerts(e) == 0 {
		t.Error("after a restart with the checkpoint, meter-7's flood raised no rate_spike: its baseline was lost")
	}

	// Control: the same traffic with a cold start in between.
	cold := setup(t, "ckpt_cold")
	publish(cold, 0, 120, false)
	cold.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond})
	publish(cold, 120, 121, true)
	cold.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond})
	if floodAlerts(cold) != 0 {
		t.Error("a cold-started meter-7 was judged without history: the control does not show what the checkpoint adds")
	}

	// A corrupt checkpoint is reported and means a cold start, not a failure.
	b, _ := os.ReadFile(ckpt)
	b[len(b)/2] ^= 0xff
	os.WriteFile(ckpt, b, 0o600)
	p, err := pipeline.New(cfg, e.cons, e.ch, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a corrupt checkpoint must not stop the pipeline: %v", err)
	}
	if p.Restored().Records != 0 {
		t.Error("a corrupt checkpoint was used")
	}
}

// TestPeriodicCheckpoint: with CheckpointEvery, the checkpoint is written while
// the pipeline runs (pausing the workers at one point of the stream), and it
// can be restored.
func TestPeriodicCheckpoint(t *testing.T) {
	e := setup(t, "ckpt_periodic")
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 20 * time.Millisecond, FetchWait: 20 * time.Millisecond,
		Checkpoint: ckpt, CheckpointEvery: time.Millisecond}, e.cons, e.ch, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for i := range 20 {
		if _, err := e.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "test"), []byte(line(fmt.Sprintf("meter-%d", i), time.Duration(i)*time.Second, ""))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ckpt); err == nil && p.M.Events.Load() == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint written while running")
		}
		time.Sleep(10 * time.Millisecond) // polling for a file the pipeline writes
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	q, err := pipeline.New(pipeline.Config{Workers: 2, Checkpoint: ckpt}, e.cons, e.ch, e.pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if q.Restored().Records != 20 {
		t.Errorf("restored %d devices, want 20", q.Restored().Records)
	}
}
