package formats

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestClockSkewBound: a record stamped ahead of its arrival by more than the
// skew bound is dead-lettered (timestamp_out_of_range), one within it is
// clamped to the arrival, and without an arrival time (a replay of a file)
// neither applies, whatever the format.
func TestClockSkewBound(t *testing.T) {
	arrival := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	kongLine := func(at time.Time) []byte {
		return fmt.Appendf(nil, `{"request":{"uri":"/v1/x","method":"GET"},"client_ip":"192.0.2.30","response":{"status":200},"started_at":%d}`, at.UnixMilli())
	}
	jsonLine := func(at time.Time) []byte {
		return fmt.Appendf(nil, `{"ts":%q,"device":"d-1","cmd":"GET /v1/x"}`, at.Format(time.RFC3339Nano))
	}
	lines := map[string]func(time.Time) []byte{schemas.FormatKong: kongLine, schemas.FormatJSON: jsonLine}
	for format, line := range lines {
		f := func(skew, ahead time.Duration, now int64, wantTime time.Time, wantErr bool) {
			t.Helper()
			d, err := New(format, Options{MaxClockSkew: skew})
			if err != nil {
				t.Fatal(err)
			}
			var ev schemas.Event
			err = d.Decode(line(arrival.Add(ahead)), 1, 0, now, &ev)
			if wantErr {
				var de *schemas.DecodeError
				if !errors.As(err, &de) || de.Reason != schemas.DeadLetterTimestampOutOfRange || de.Detail != schemas.DetailTimeTooFuture {
					t.Errorf("%s: %v ahead, skew %v: err %v, want %s (%q)", format, ahead, skew, err, schemas.DeadLetterTimestampOutOfRange, schemas.DetailTimeTooFuture)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v ahead, skew %v: %v", format, ahead, skew, err)
			}
			if got := time.Unix(0, ev.Time).UTC(); !got.Equal(wantTime) {
				t.Errorf("%s: %v ahead, skew %v: time %v, want %v", format, ahead, skew, got, wantTime)
			}
		}
		now := arrival.UnixNano()
		f(0, 23*time.Hour, now, time.Time{}, true) // the line: now+23 h
		f(0, schemas.DefaultMaxClockSkew+time.Second, now, time.Time{}, true)
		f(0, 30*time.Second, now, arrival, false)               // within the bound: clamped
		f(0, -time.Hour, now, arrival.Add(-time.Hour), false)   // the past: kept (backfill)
		f(time.Minute, 2*time.Minute, now, time.Time{}, true)   // a tighter bound
		f(48*time.Hour, 23*time.Hour, now, arrival, false)      // a looser one
		f(0, 23*time.Hour, 0, arrival.Add(23*time.Hour), false) // replay: no arrival, no bound
	}
}

// TestControlInIdentity: a device id with a NUL, a terminal escape or a C1
// control is dead-lettered (bad_field), in the canonical format and in a
// gateway's.
func TestControlInIdentity(t *testing.T) {
	for _, id := range []string{"d\\u0000x", "d\\u001b[31mred", "d\\u009bx", "d\\u007f"} {
		lines := map[string]string{
			schemas.FormatJSON:      `{"ts":"2026-01-05T10:00:00Z","device":"` + id + `","cmd":"GET /x"}`,
			schemas.FormatNginxJSON: `{"time":"2026-01-05T10:00:00+00:00","remote_addr":"192.0.2.1","request_method":"GET","request_uri":"/x","status":"200","http_x_device_id":"` + id + `"}`,
		}
		for format, line := range lines {
			d, err := New(format, Options{Identity: "header:X-Device-Id"})
			if err != nil {
				t.Fatal(err)
			}
			var ev schemas.Event
			err = d.Decode([]byte(line), 1, 0, 0, &ev)
			var de *schemas.DecodeError
			if !errors.As(err, &de) || de.Reason != schemas.DeadLetterBadField || de.Detail != schemas.DetailControlInIdentity {
				t.Errorf("%s: device %s: err %v (device %q), want %s", format, id, err, ev.Device, schemas.DetailControlInIdentity)
			}
		}
	}
}
