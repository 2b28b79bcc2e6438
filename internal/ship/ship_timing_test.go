package ship

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
)

// BenchmarkShipFile ships a file of 100k access-log-sized JSON lines to an
// embedded server (file storage) per iteration; lines/s is the end-to-end
// rate including acks.
func BenchmarkShipFile(b *testing.B) {
	e, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Shutdown()
	ctx := context.Background()
	nc, js, err := bus.Connect(ctx, e.URL(), "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	sc := bus.DefaultStreamsConfig()
	if _, _, err := bus.Ensure(ctx, js, sc); err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `{"time":"2026-11-22T03:00:00.%06dZ","device_id":"d-%d","client_ip":"10.0.%d.%d","method":"POST","path":"/v1/devices/d-%d/telemetry","status":200,"bytes_in":512,"bytes_out":87,"latency_ms":3.2}`+"\n",
			i, i%5000, i%250, i%200, i%5000)
	}
	path := filepath.Join(b.TempDir(), "access.log")
	body := []byte(sb.String())
	cfg := DefaultConfig()
	cfg.Inputs, cfg.Follow, cfg.Subject = []string{path}, false, testSubject
	cfg.Log = slog.New(slog.DiscardHandler)
	b.ReportAllocs()
	b.SetBytes(int64(sb.Len()))
	iter := 0
	for b.Loop() {
		// A new first line gives the file a new fingerprint, so message ids
		// differ from the last iteration's and nothing is dropped as a duplicate.
		b.StopTimer()
		iter++
		if err := os.WriteFile(path, append(fmt.Appendf(nil, `{"iteration":%d}`+"\n", iter), body...), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		var st Stats
		if err := Run(ctx, js, cfg, &st); err != nil {
			b.Fatal(err)
		}
		if st.Lines.Load() != n+1 || st.Duplicates.Load() != 0 {
			b.Fatalf("shipped %d lines (%d duplicate messages), want %d new", st.Lines.Load(), st.Duplicates.Load(), n+1)
		}
	}
	b.ReportMetric(float64(b.N*(n+1))/b.Elapsed().Seconds(), "lines/s")
}
