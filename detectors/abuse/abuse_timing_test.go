package abuse_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors/abuse"
	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

// BenchmarkObserve: the per-event cost on a device's telemetry, a
// browser's asset (a path with a dot: the known-bad list is searched), a
// scanner's probe, and bursts of not-found and failed-authentication
// responses (all at 20 requests a second: a request flood as well).
func BenchmarkObserve(b *testing.B) {
	for _, c := range []struct {
		name, cmd string
		status    uint16
		auth      schemas.AuthOutcome
	}{
		{"telemetry", "/v1/devices/dev-000042/telemetry", 200, schemas.AuthOK},
		{"asset", "/static/js/app.1f3a9c2e.js", 200, schemas.AuthOK},
		{"probe", "/wp-login.php", 200, schemas.AuthOK},
		{"not_found", "/v1/devices/dev-000042/telemetry", 404, schemas.AuthOK},
		{"auth_failures", "/v1/devices/dev-000042/telemetry", 401, schemas.AuthFailed},
	} {
		b.Run(c.name, func(b *testing.B) {
			var ev schemas.Event
			ev.SetRawCommand([]byte("GET"), []byte(c.cmd))
			ev.Status, ev.Auth = c.status, c.auth
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
