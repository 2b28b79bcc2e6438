package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
)

// The simulated fleet of the end-to-end tests (pipetest), under the names
// they use.

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
