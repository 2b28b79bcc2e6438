package formats

import (
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestTimeZone checks how Options.TimeZone chooses a Mosquitto source's zone.
func TestTimeZone(t *testing.T) {
	line := []byte("2026-01-05T10:00:00: New client connected from 192.0.2.1:1 as c1 (p2, c1, k60).")
	f := func(spec, source, want string) {
		t.Helper()
		d, err := New(schemas.FormatMosquitto, Options{TimeZone: spec, Source: source})
		if err != nil {
			t.Fatalf("TimeZone %q: %v", spec, err)
		}
		var ev schemas.Event
		if err := d.Decode(line, 1, 0, now, &ev); err != nil {
			t.Fatal(err)
		}
		if got := ev.EventTime().Format(time.RFC3339); got != want {
			t.Errorf("TimeZone %q source %q: %s, want %s", spec, source, got, want)
		}
	}
	f("UTC", "m1", "2026-01-05T10:00:00Z")
	f("Europe/Berlin", "m1", "2026-01-05T09:00:00Z")
	f("UTC,mosquitto=Europe/Berlin", "m1", "2026-01-05T09:00:00Z")
	f("mosquitto=Europe/Berlin,*.m1=America/New_York", "m1", "2026-01-05T15:00:00Z")
	f("mosquitto=Europe/Berlin,*.m1=America/New_York", "m2", "2026-01-05T09:00:00Z")
	f("*.m1=America/New_York,mosquitto.m1=Asia/Tokyo", "m1", "2026-01-05T01:00:00Z")
	f("nginx=Europe/Berlin,UTC", "m2", "2026-01-05T10:00:00Z")
	local := time.Date(2026, 1, 5, 10, 0, 0, 0, time.Local).UTC().Format(time.RFC3339)
	f("", "m1", local)
	// The syntax of --identity: a bare key is a format, not a source id.
	for _, bad := range []string{"Mars/Olympus", "=UTC", "mosquitto=", "m1=UTC", "UTC,Local", "*=UTC"} {
		if _, err := New(schemas.FormatNginx, Options{TimeZone: bad}); err == nil || !strings.Contains(err.Error(), "time zone") {
			t.Errorf("TimeZone %q: err = %v, want a time zone error", bad, err)
		}
	}
}

// TestSyslogYear checks that an RFC 3164 time without a year is never put in the future.
func TestSyslogYear(t *testing.T) {
	ref := time.Date(2027, 1, 2, 0, 0, 0, 0, time.UTC).UnixNano()
	for _, c := range []struct{ line, want string }{
		{"Dec 31 23:59:59 h mosquitto[1]: x", "2026-12-31T23:59:59Z"},
		{"Jan  2 10:00:00 h mosquitto[1]: x", "2027-01-02T10:00:00Z"},
		{"Jan  5 10:00:00 h mosquitto[1]: x", "2026-01-05T10:00:00Z"},
	} {
		msg, ts, ok := stripSyslog([]byte(c.line), time.UTC, ref)
		if got := time.Unix(0, ts).UTC().Format(time.RFC3339); !ok || got != c.want || string(msg) != "x" {
			t.Errorf("%q: %s %q %v, want %s", c.line, got, msg, ok, c.want)
		}
	}
}

// TestMosquittoAuthFailureAllocs checks that the lines of a credential-stuffing
// flood (2.1 auth failures, with a syslog prefix and a local-time zone)
// decode without allocating.
func TestMosquittoAuthFailureAllocs(t *testing.T) {
	d, err := New(schemas.FormatMosquitto, Options{TimeZone: "Europe/Berlin"})
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"2026-06-21 14:20:44: Client ESP-34E1C6F61B44 [198.51.100.23:52097] disconnected: not authorised.",
		"Mar  4 10:00:00 gw1 mosquitto[123]: Client meter-7 [203.0.113.7:40000] disconnected: not authorised.",
		"<30>1 2026-03-04T09:00:05.000Z gw1 mosquitto 123 - - 1772614805: Client meter-10 [192.0.2.10:41001] disconnected: not authorised.",
	} {
		var ev schemas.Event
		b := []byte(line)
		if err := d.Decode(b, 1, 0, now, &ev); err != nil || ev.Auth != schemas.AuthFailed {
			t.Fatalf("%q: %v, auth %s", line, err, ev.Auth)
		}
		if n := testing.AllocsPerRun(100, func() { _ = d.Decode(b, 1, 0, now, &ev) }); n != 0 {
			t.Errorf("%q: %.1f allocations per line, want 0", line, n)
		}
	}
}
