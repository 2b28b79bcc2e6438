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
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
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
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: dsn, Database: db, Log: log})
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
	return &Env{JS: js, Cons: cons, CH: ch, Conn: conn, DB: db, Pub: sink.NewNATSPublisher(js, kv, log)}
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
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute) // a hang bound: 51k events under -race on a loaded machine took over a minute
	for {
		info, err := e.Cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream > 0 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("pipeline did not catch up: pending=%d ack_pending=%d", info.NumPending, info.NumAckPending)
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side condition, not waiting for work by time
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
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
