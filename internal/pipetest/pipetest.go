// Package pipetest is test support for the end-to-end tests of package
// pipeline (like net/http/httptest): a private NATS server with the
// pipeline's streams and a ClickHouse database per test, a run until the
// consumer has caught up, and the log lines those tests publish. The tests
// live in package pipeline and in the packages under tests/ (grouped by what
// they test, so that `go test ./...` runs the groups side by side).
package pipetest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

// Env is one test's servers: an embedded NATS server with the pipeline's
// streams, a migrated ClickHouse database and the test's own connection to
// it.
type Env struct {
	JS   jetstream.JetStream
	Cons pipeline.Source
	CH   *sink.ClickHouse
	Conn clickhouse.Conn
	DB   string
	Pub  *sink.NATSPublisher
}

// Setup starts a NATS server with the pipeline's streams (ack wait 30 s) and
// migrates database db on the ClickHouse server at dsn; t's cleanup stops and
// closes them.
func Setup(t testing.TB, dsn, db string) *Env {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	ns, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, js, err := bus.Connect(ctx, ns.URL(), "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := bus.DefaultStreamsConfig()
	cfg.AckWait = 30 * time.Second
	cons, kv, err := bus.Ensure(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ch, conn := OpenDB(t, dsn, db)
	return &Env{JS: js, Cons: cons, CH: ch, Conn: conn, DB: db, Pub: sink.NewNATSPublisher(js, kv, log)}
}

// OpenDB migrates database db on the ClickHouse server at dsn and returns the
// pipeline's writer to it and a connection for the test's queries; t's
// cleanup closes both.
func OpenDB(t testing.TB, dsn, db string) (*sink.ClickHouse, clickhouse.Conn) {
	t.Helper()
	ctx := context.Background()
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: dsn, Database: db, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	if err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return ch, conn
}

// Count returns the rows of table (FINAL) in the test's database.
func (e *Env) Count(t testing.TB, table string) uint64 {
	t.Helper()
	var n uint64
	if err := e.Conn.QueryRow(context.Background(), fmt.Sprintf("SELECT count() FROM %s.%s FINAL", e.DB, table)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Run runs a pipeline of cfg on e.Cons until the consumer has nothing
// pending or unacked, stops it and returns it.
func (e *Env) Run(t testing.TB, cfg pipeline.Config) *pipeline.Pipeline {
	t.Helper()
	p, err := pipeline.New(cfg, e.Cons, e.CH, e.Pub, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	RunUntilDone(t, e.Cons, p.Run)
	return p
}

// Base is the event time the tests' log lines start at.
var Base = time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)

// Line is a canonical JSON log line of meter device (class meter/m1, its own
// API key, one address) at Base+at; extra is appended to its fields
// (`,"fw":"..."`).
func Line(device string, at time.Duration, extra string) string {
	return fmt.Sprintf(`{"ts":%q,"src":"gateway","tenant":"acme","device":%q,"class":"meter/m1","api_key":"key-%s","ip":"203.0.113.9","country":"DE","method":"POST","path":"/v1/devices/%s/readings","status":200,"auth":"ok"%s}`,
		Base.Add(at).Format(time.RFC3339Nano), device, device, device, extra)
}

// SlowRows is a ClickHouse that hangs for a while (fault injection around
// the real writer): every scored-row insert waits until Release is closed.
type SlowRows struct {
	*sink.ClickHouse
	Release <-chan struct{}
}

// WriteScored waits for Release (or ctx), then writes rec.
func (s SlowRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	select {
	case <-s.Release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.ClickHouse.WriteScored(ctx, rec)
}

// FleetMessages returns a simulated fleet of devices over span, with
// attacks, as log messages of 100 canonical JSON lines, with a few
// undecodable records mixed in (a line without a device every 1,000).
func FleetMessages(t testing.TB, devices int, span time.Duration) [][]byte {
	t.Helper()
	fc := sim.DefaultConfig()
	fc.Devices, fc.Duration = devices, span
	fl, err := sim.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	var buf []byte
	n := 0
	for {
		l, _, ok := fl.Next(buf)
		if !ok {
			break
		}
		buf = append(l, '\n')
		if n++; n%1000 == 0 {
			buf = append(buf, `{"ts":"2026-01-05T10:00:00Z"}`+"\n"...) // no device: a dead letter
		}
		if n%100 == 0 {
			msgs = append(msgs, append([]byte(nil), buf...))
			buf = buf[:0]
		}
	}
	if len(buf) > 0 {
		msgs = append(msgs, buf)
	}
	return msgs
}

// PublishLogs publishes msgs as JSON log messages (message ids m-0, m-1, ...).
func PublishLogs(t testing.TB, js jetstream.JetStream, msgs [][]byte) {
	t.Helper()
	subject := bus.LogSubject(schemas.FormatJSON, "sim")
	for i, m := range msgs {
		if _, err := js.Publish(context.Background(), subject, m, jetstream.WithMsgID(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// RunUntilDone runs run until cons has nothing pending or unacked, then
// stops it. It fails when the consumer makes no progress (its delivered
// and ack floor positions and its unacked count all unchanged) for 3
// minutes, a hang bound: -race on a loaded machine is slow, a hung stage
// makes no progress; the failure reports the consumer's state.
func RunUntilDone(t testing.TB, cons pipeline.Source, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	stall := NewProgress(3 * time.Minute)
	var last *jetstream.ConsumerInfo
	for {
		info, err := cons.Info(context.Background())
		if err != nil { // a loaded machine may time an info request out: ask again
			if stall.Stalled(stall.last) {
				cancel()
				t.Fatalf("did not catch up: %v (last seen %s)", err, ConsumerState(last))
			}
			continue
		}
		last = info
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if stall.Stalled(consumerMark(info)) {
			cancel()
			t.Fatalf("did not catch up, no progress for %v: %s", stall.quiet, ConsumerState(info))
		}
		select {
		case err := <-done:
			t.Fatalf("stopped before catching up (err %v): %s", err, ConsumerState(info))
		case <-time.After(20 * time.Millisecond): // polling a server-side condition, not waiting for work by time
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// consumerMark is a mark of a consumer's progress for Progress: it moves
// when its delivered or ack floor stream position or its unacked count
// does (a redelivery moves none of them).
func consumerMark(info *jetstream.ConsumerInfo) uint64 {
	return info.Delivered.Stream<<40 ^ info.AckFloor.Stream<<20 ^ uint64(info.NumAckPending)
}

// ConsumerState describes a consumer's state for a test's failure: its
// pending and unacked counts, its delivered and ack floor sequences (stream
// and consumer), how many unacked messages were redelivered and how many
// pull requests wait.
func ConsumerState(info *jetstream.ConsumerInfo) string {
	if info == nil {
		return "no consumer info"
	}
	return fmt.Sprintf("consumer %s: pending=%d ack_pending=%d delivered stream/consumer seq=%d/%d ack floor stream/consumer seq=%d/%d redelivered=%d waiting=%d last active %v",
		info.Name, info.NumPending, info.NumAckPending, info.Delivered.Stream, info.Delivered.Consumer,
		info.AckFloor.Stream, info.AckFloor.Consumer, info.NumRedelivered, info.NumWaiting, lastActive(info.Delivered.Last))
}

func lastActive(at *time.Time) string {
	if at == nil {
		return "never"
	}
	return fmt.Sprintf("%.1fs ago", time.Since(*at).Seconds())
}

// Outcome is what a run left in ClickHouse and NATS.
type Outcome struct {
	Rows        uint64   // scored rows (FINAL)
	Alerts      []string // alert ids, sorted
	Decisions   []string // decision ids, sorted
	DeadLetters uint64   // dead-letter messages
}

// Outcome returns what the runs on e left.
func (e *Env) Outcome(t testing.TB) Outcome {
	t.Helper()
	ctx := context.Background()
	s, err := e.JS.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	return Outcome{Rows: e.Count(t, schemas.TableScored), Alerts: IDs(t, e.Conn, e.DB, schemas.TableAlerts), Decisions: IDs(t, e.Conn, e.DB, schemas.TableDecisions),
		DeadLetters: s.CachedInfo().State.Msgs}
}

// IDs returns the distinct ids (schemas.ColID) of table in database db,
// sorted: what testids.Compare compares.
func IDs(t testing.TB, conn clickhouse.Conn, db, table string) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT DISTINCT %s FROM %s.%s ORDER BY %s", schemas.ColID, db, table, schemas.ColID))
	if err != nil {
		t.Fatalf("cannot read the ids of %s: %v", table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

// Background runs p until the returned stop is called, which cancels the run
// and returns Run's error: for a test that watches a running pipeline
// (`defer pipetest.Background(p)()`).
func Background(p *pipeline.Pipeline) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

// Progress bounds a wait by the absence of progress rather than by its
// length: on a machine whose CPUs are oversubscribed a catch-up may take many
// minutes, but one that makes no progress for Quiet is hung.
type Progress struct {
	quiet time.Duration
	last  uint64
	at    time.Time
}

// NewProgress returns a Progress that reports a stall after quiet without
// progress.
func NewProgress(quiet time.Duration) *Progress {
	return &Progress{quiet: quiet, at: time.Now()}
}

// Stalled reports whether mark, a counter that grows while work is being
// done (a consumer's delivered and acknowledged positions), has not moved
// for the quiet span.
func (p *Progress) Stalled(mark uint64) bool {
	if mark != p.last {
		p.last, p.at = mark, time.Now()
		return false
	}
	return time.Since(p.at) > p.quiet
}
