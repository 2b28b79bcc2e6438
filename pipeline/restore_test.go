package pipeline_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/state"
)

// writeCheckpoint writes a checkpoint of devices records of layout's size
// (zeroed bodies: the restore, not the detectors, is under test).
func writeCheckpoint(t *testing.T, path string, layoutOf *pipeline.Pipeline, devices int) {
	t.Helper()
	l := layoutOf.Layout()
	tb, err := state.NewTable(state.Config{RecordSize: l.Size, InitialDevices: devices})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixNano()
	for i := range uint64(devices) {
		tb.Record(i*0x9e3779b97f4a7c15, ^i, now)
	}
	if err := checkpoint.Write(path, checkpoint.MetaOf(l), []*state.Table{tb}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreLarge restores a checkpoint of more devices than a default
// table holds into another worker count, checks the device-count metric
// (counted once), and that a context ended during a restore stops it with
// an error (iotwatch run then exits on SIGTERM instead of finishing the
// restore) and leaves the checkpoint usable.
func TestRestoreLarge(t *testing.T) {
	const devices = 40_000
	path := filepath.Join(t.TempDir(), "state.ckpt")
	quiet := slog.New(slog.DiscardHandler)
	cold, err := pipeline.New(pipeline.Config{Workers: 1, Checkpoint: path}, nil, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	writeCheckpoint(t, path, cold, devices)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := pipeline.NewContext(ctx, pipeline.Config{Workers: 3, Checkpoint: path}, nil, nil, nil, quiet); !errors.Is(err, context.Canceled) {
		t.Fatalf("NewContext with an ended context: err = %v, want one wrapping context.Canceled", err)
	}

	p, err := pipeline.New(pipeline.Config{Workers: 3, Checkpoint: path}, nil, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Restored().Records; got != devices {
		t.Fatalf("restored %d devices, want %d", got, devices)
	}
	if got := p.M.Devices.Load(); got != devices {
		t.Fatalf("device metric %d after the restore, want %d", got, devices)
	}
}
