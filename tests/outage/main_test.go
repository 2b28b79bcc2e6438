package outage_test

import (
	"context"
	"os"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	_ "github.com/iotwatch/iotwatch/detectors/all" // the detectors the pipeline runs
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/sink"
)

// One private ClickHouse for the package (about 1 s to start and 1 s to
// stop); TestDecisionsWithoutClickHouse starts one of its own to stop.
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
	test *pipetest.Env
}

func setup(t *testing.T, db string) *env {
	t.Helper()
	return setupOn(t, db, sharedCH.Get(t).DSN())
}

// setupOn is setup with the ClickHouse server at dsn.
func setupOn(t *testing.T, db, dsn string) *env {
	t.Helper()
	e := pipetest.Setup(t, dsn, db)
	return &env{js: e.JS, cons: e.Cons, ch: e.CH, conn: e.Conn, db: e.DB, pub: e.Pub, test: e}
}

func (e *env) count(t *testing.T, table string) uint64 { return e.test.Count(t, table) }

var line = pipetest.Line

// slowRows is pipetest.SlowRows: every scored-row insert waits for release.
type slowRows struct {
	*sink.ClickHouse
	release <-chan struct{}
}

func (s slowRows) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	return pipetest.SlowRows{ClickHouse: s.ClickHouse, Release: s.release}.WriteScored(ctx, rec)
}
