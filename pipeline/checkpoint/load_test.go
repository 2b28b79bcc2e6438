package checkpoint

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/iotwatch/iotwatch/pipeline/state"
)

// bigCheckpoint writes a checkpoint of n records of 8 bytes and returns its path.
func bigCheckpoint(t *testing.T, n int) string {
	t.Helper()
	tb, err := state.NewTable(state.Config{RecordSize: 8, InitialDevices: n})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(n) {
		rec, _ := tb.Record(i, ^i, t0)
		rec[0] = byte(i)
	}
	path := filepath.Join(t.TempDir(), "big.ckpt")
	if err := Write(path, Meta{LayoutVersion: 1, RecordSize: 8}, []*state.Table{tb}, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadReservesAndReports checks that Load announces the record count
// before the first record (so that tables are presized) and reports
// progress every ProgressEvery records.
func TestLoadReservesAndReports(t *testing.T) {
	const n = ProgressEvery + 1000
	path := bigCheckpoint(t, n)
	var reserved, puts uint64
	var progress [][2]uint64
	m, err := Load(context.Background(), path, Meta{LayoutVersion: 1, RecordSize: 8}, Target{
		Reserve: func(records uint64) {
			if puts != 0 || reserved != 0 {
				t.Fatalf("Reserve(%d) after %d puts and a Reserve(%d)", records, puts, reserved)
			}
			reserved = records
		},
		Put:      func(_, _ uint64, _ int64, _ []byte) { puts++ },
		Progress: func(done, total uint64) { progress = append(progress, [2]uint64{done, total}) },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if reserved != n || puts != n || m.Records != n {
		t.Fatalf("reserved %d, put %d, meta %d records; want %d", reserved, puts, m.Records, n)
	}
	if len(progress) != 1 || progress[0] != [2]uint64{ProgressEvery, n} {
		t.Fatalf("progress reports %v, want [[%d %d]]", progress, ProgressEvery, n)
	}
}

// TestLoadCancelled checks that a cancelled context stops a restore within
// ProgressEvery/16 records, with an error that wraps the context's.
func TestLoadCancelled(t *testing.T) {
	const n = 3 * ProgressEvery / 16
	path := bigCheckpoint(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var puts int
	_, err := Load(ctx, path, Meta{LayoutVersion: 1, RecordSize: 8}, Target{Put: func(_, _ uint64, _ int64, _ []byte) {
		if puts++; puts == 10 {
			cancel()
		}
	}}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Load after cancel: err = %v, want one wrapping context.Canceled", err)
	}
	if puts > ProgressEvery/16 {
		t.Fatalf("Load went on for %d records after its context was cancelled at 10", puts)
	}
}
