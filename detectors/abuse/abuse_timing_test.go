package abuse_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/abuse"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkObserve: the per-event cost on a device's telemetry, a
// browser's asset (a path with a dot: the known-bad list is searched), and
// a scanner's probe.
func BenchmarkObserve(b *testing.B) {
	for _, c := range []struct{ name, cmd string }{
		{"telemetry", "/v1/devices/dev-000042/telemetry"},
		{"asset", "/static/js/app.1f3a9c2e.js"},
		{"probe", "/wp-login.php"},
	} {
		b.Run(c.name, func(b *testing.B) {
			var ev schemas.Event
			ev.SetRawCommand([]byte("GET"), []byte(c.cmd))
			ev.Status = 200
			state := make([]byte, abuse.StateSize)
			var d abuse.Detector
			b.ReportAllocs()
			cpu := threadcpu.Start()
			for b.Loop() {
				ev.Time += 50e6
				d.Observe(&ev, state, nil)
			}
			cpu.Report(b)
		})
	}
}

func TestObserveAllocs(t *testing.T) {
	var ev schemas.Event
	ev.SetRawCommand([]byte("GET"), []byte("/static/../../etc/passwd"))
	ev.Status = 404
	state := make([]byte, abuse.StateSize)
	var d abuse.Detector
	if n := testing.AllocsPerRun(100, func() { ev.Time += 1e9; d.Observe(&ev, state, nil) }); n != 0 {
		t.Errorf("Observe allocates %v times", n)
	}
}
