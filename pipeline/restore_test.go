package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/checkpoint"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/state"
	"github.com/iotwatch/iotwatch/schemas"
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

// TestRestoreCalibration: the alert calibration saved in a checkpoint is the
// pipeline's after a restore (its device-hours, and so its warm-up, kept),
// and a checkpoint without one leaves it cold.
func TestRestoreCalibration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.ckpt")
	quiet := slog.New(slog.DiscardHandler)
	cold, err := pipeline.New(pipeline.Config{Workers: 1, Checkpoint: path}, nil, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	cal := decide.NewCalibration(decide.DefaultAlertBudget)
	var s schemas.Scored
	for d := range 3000 {
		var ev schemas.Event
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("d-%d", d)))
		var mem [decide.CalibrationStateSize]byte
		for h := range 2 { // one complete device-hour each
			ev.Time = time.Date(2026, 1, 5, h, 0, 0, 0, time.UTC).UnixNano()
			cal.Learn(&ev, &s, mem[:])
		}
	}
	if cal.DeviceHours() != 3000 {
		t.Fatalf("%d device-hours learned, want 3000", cal.DeviceHours())
	}
	l := cold.Layout()
	tb, err := state.NewTable(state.Config{RecordSize: l.Size, InitialDevices: 1})
	if err != nil {
		t.Fatal(err)
	}
	meta := checkpoint.MetaOf(l)
	meta.Calibration = cal.AppendSnapshot(nil)
	if err := checkpoint.Write(path, meta, []*state.Table{tb}, nil); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Workers: 2, Checkpoint: path}, nil, nil, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Calibration().DeviceHours(); got != 3000 {
		t.Errorf("restored calibration: %d device-hours, want 3000", got)
	}
	if err := checkpoint.Write(path, checkpoint.MetaOf(l), []*state.Table{tb}, nil); err != nil {
		t.Fatal(err)
	}
	if p, err = pipeline.New(pipeline.Config{Workers: 2, Checkpoint: path}, nil, nil, nil, quiet); err != nil {
		t.Fatal(err)
	}
	if got := p.Calibration().DeviceHours(); got != 0 {
		t.Errorf("a checkpoint without a calibration restored %d device-hours", got)
	}
}
