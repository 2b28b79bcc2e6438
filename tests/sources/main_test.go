package sources_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	_ "github.com/iotwatch/iotwatch/detectors/all" // the detectors the pipeline runs
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/sink"
)

// One private ClickHouse for the package (about 1 s to start and 1 s to
// stop).
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }

// env is pipetest.Env under the names the tests use.
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
	e := pipetest.Setup(t, sharedCH.Get(t).DSN(), db)
	return &env{js: e.JS, cons: e.Cons, ch: e.CH, conn: e.Conn, db: e.DB, pub: e.Pub}
}

// test is e as a pipetest.Env.
func (e *env) test() *pipetest.Env {
	return &pipetest.Env{JS: e.js, Cons: e.cons, CH: e.ch, Conn: e.conn, DB: e.db, Pub: e.pub}
}

// run runs a pipeline until the consumer has nothing pending or unacked.
func (e *env) run(t *testing.T, cfg pipeline.Config) *pipeline.Pipeline {
	t.Helper()
	return e.test().Run(t, cfg)
}

// outcome is what a run left in ClickHouse and NATS (pipetest.Outcome).
type outcome struct {
	rows        uint64
	alerts      []string
	decisions   []string
	deadLetters uint64
}

func (e *env) outcome(t *testing.T) outcome {
	t.Helper()
	o := e.test().Outcome(t)
	return outcome{rows: o.Rows, alerts: o.Alerts, decisions: o.Decisions, deadLetters: o.DeadLetters}
}

func fleetMessages(t *testing.T, devices int, span time.Duration) [][]byte {
	t.Helper()
	return pipetest.FleetMessages(t, devices, span)
}

func publishLogs(t *testing.T, js jetstream.JetStream, msgs [][]byte) {
	t.Helper()
	pipetest.PublishLogs(t, js, msgs)
}

// runUntilDone runs run until cons has nothing pending or unacked.
func runUntilDone(t *testing.T, cons pipeline.Source, run func(context.Context) error) {
	t.Helper()
	pipetest.RunUntilDone(t, cons, run)
}
