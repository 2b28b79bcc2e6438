package checkpoint

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/shard"
	"github.com/iotwatch/iotwatch/pipeline/state"
)

var restoreDevices = flag.String("restore-devices", "1000000",
	"BenchmarkRestore: comma-separated device counts (1000000,3000000 for bench/RESULTS.md; 3M needs ~3 GB of RAM and ~1 GB of disk)")

// benchRecordSize is the record size of the default detectors (worker
// header 16 + volume, geo, command and the others' slices), 272 bytes when
// this was written.
const benchRecordSize = 272

// BenchmarkRestore measures a restart's restore as pipeline.restore does it:
// a checkpoint written from 4 workers' tables is read back into 4 fresh
// tables, each record sent to its shard's table with Record (presized: the
// tables Reserve the checkpoint's share first, as the pipeline does;
// growing: from the default size, as before issue 13).
//
//	go test -run '^$' -bench BenchmarkRestore -benchtime 1x ./pipeline/checkpoint -restore-devices 1000000,3000000
func BenchmarkRestore(b *testing.B) {
	for _, s := range strings.Split(*restoreDevices, ",") {
		devices, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("-restore-devices %q: %v", s, err)
		}
		path := filepath.Join(b.TempDir(), "state.ckpt")
		writeBenchCheckpoint(b, path, devices, 4)
		for _, presize := range []bool{true, false} {
			b.Run(fmt.Sprintf("devices=%d/presized=%v", devices, presize), func(b *testing.B) {
				b.ReportAllocs()
				var probes uint64
				for b.Loop() {
					tables := make([]*state.Table, 4)
					for i := range tables {
						tables[i], _ = state.NewTable(state.Config{RecordSize: benchRecordSize})
					}
					to := Target{Put: func(key, alt uint64, lastSeen int64, rec []byte) {
						r, _ := tables[shard.Of(key, len(tables))].Record(key, alt, lastSeen)
						copy(r, rec)
					}}
					if presize {
						to.Reserve = func(records uint64) {
							for _, t := range tables {
								t.Reserve(int(records/4 + records/64 + 1024))
							}
						}
					}
					m, err := Load(context.Background(), path, Meta{LayoutVersion: 1, RecordSize: benchRecordSize}, to, nil)
					if err != nil {
						b.Fatal(err)
					}
					n := 0
					for _, t := range tables {
						st := t.Stats()
						n += st.Devices
						probes += st.Probes
					}
					if n != devices || m.Records != uint64(devices) {
						b.Fatalf("restored %d devices (file: %d), want %d", n, m.Records, devices)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(devices), "ns/device")
				b.ReportMetric(float64(probes)/float64(b.N)/float64(devices), "probes/device")
			})
		}
	}
}

// writeBenchCheckpoint writes a checkpoint of devices records spread over
// workers tables by shard.Of, as a pipeline of that many workers would.
func writeBenchCheckpoint(b *testing.B, path string, devices, workers int) {
	b.Helper()
	tables := make([]*state.Table, workers)
	for i := range tables {
		tables[i], _ = state.NewTable(state.Config{RecordSize: benchRecordSize, InitialDevices: devices/workers + devices/64 + 1024})
	}
	now := time.Now().UnixNano()
	for i := range uint64(devices) {
		key := i*0x9e3779b97f4a7c15 + 1
		rec, _ := tables[shard.Of(key, workers)].Record(key, ^i, now)
		rec[0], rec[benchRecordSize-1] = byte(i), byte(i>>8)
	}
	if err := Write(path, Meta{LayoutVersion: 1, RecordSize: benchRecordSize}, tables, nil); err != nil {
		b.Fatal(err)
	}
}
