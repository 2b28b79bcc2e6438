package takeover_test

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

// newHandoverRig is pipetest.NewHandoverRig on a fresh database db.
func newHandoverRig(t *testing.T, db string, msgs [][]byte, ackWait time.Duration) *pipetest.HandoverRig {
	t.Helper()
	return pipetest.NewHandoverRig(t, pipetest.Setup(t, sharedCH.Get(t).DSN(), db), msgs, ackWait)
}
