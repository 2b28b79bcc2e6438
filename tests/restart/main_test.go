package restart_test

import (
	"os"
	"testing"
	"time"

	_ "github.com/iotwatch/iotwatch/detectors/all" // the detectors the pipeline runs
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
)

// One private ClickHouse for the package (about 1 s to start and 1 s to
// stop).
var sharedCH chtest.Shared

func TestMain(m *testing.M) { os.Exit(sharedCH.Main(m)) }

// env is a test's NATS server and ClickHouse database (pipetest.Env).
type env struct{ *pipetest.Env }

func (e *env) count(t *testing.T, table string) uint64 { return e.Count(t, table) }

func setup(t *testing.T, db string) *env {
	t.Helper()
	return &env{pipetest.Setup(t, sharedCH.Get(t).DSN(), db)}
}

var base = pipetest.Base

// newHandoverRig is pipetest.NewHandoverRig on a fresh database db.
func newHandoverRig(t *testing.T, db string, msgs [][]byte, ackWait time.Duration) *pipetest.HandoverRig {
	t.Helper()
	return pipetest.NewHandoverRig(t, setup(t, db).Env, msgs, ackWait)
}
