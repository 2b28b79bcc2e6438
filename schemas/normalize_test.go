package schemas

import (
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
)

func TestNormalizeCommand(t *testing.T) {
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/v1/devices/d-17/unlock?x=1", "POST /v1/devices/{id}/unlock"},
		{"get", "/v2beta/status", "GET /v2beta/status"},
		{"", "post /v1/cars/7f3a9c/start", "POST /v1/cars/{id}/start"},
		{"PUBLISH", "devices/d-1/cmd/#", "PUBLISH devices/{id}/cmd/#"},
		{"SUBSCRIBE", "devices/+/telemetry", "SUBSCRIBE devices/+/telemetry"},
		{"", "  GET   /x/0123456789012345678901234567890123456789  ", "GET /x/{id}"},
		// A method alone is read as a whole command.
		{"0", "", "{id}"},
		{"get x", "", "GET x"},
		{"connect", "", "CONNECT"},
		// A space inside a method cannot end up splitting the command differently.
		{"a 1", "c", "A_1 c"},
	} {
		got := NormalizeCommand(c.method, c.path)
		if got != c.want {
			t.Errorf("NormalizeCommand(%q, %q) = %q, want %q", c.method, c.path, got, c.want)
		}
		if again := NormalizeCommand("", got); again != got {
			t.Errorf("NormalizeCommand(%q, %q) = %q, normalized again %q", c.method, c.path, got, again)
		}
	}
}

// TestResourceText: the identifiers the normalizer replaced, as an analyst
// reads them, bounded.
func TestResourceText(t *testing.T) {
	f := func(method, path, want string) {
		t.Helper()
		var ev Event
		ev.SetRawCommand([]byte(method), []byte(path))
		if got := string(ev.ResourceText); got != want {
			t.Errorf("SetRawCommand(%q, %q): ResourceText %q, want %q", method, path, got, want)
		}
		var cp Event
		cp.CopyFrom(&ev)
		if string(cp.ResourceText) != want {
			t.Errorf("CopyFrom lost ResourceText %q", want)
		}
	}
	f("POST", "/v1/devices/lock-000042/unlock?pin=1234", "lock-000042")
	f("GET", "/v1/accounts/acct-9/devices/lock-17", "acct-9/lock-17")
	f("PUBLISH", "devices/therm-5/cmd/setpoint", "therm-5")
	f("", "GET /v1/status", "")
	f("GET", "/v2beta/status#frag-1", "")
	long := strings.Repeat("a1", 100)
	f("GET", "/x/"+long, long[:MaxResourceText-len("…")]+"…")
	f("GET", "/x/dev-1/"+long, "dev-1")
}

// TestNormalizeIdempotent: normalizing a normalized command changes nothing,
// for the commands whose path is a query alone or ends in a space before it
// (FuzzDecode found "0 ?" normalizing to "0 ", which normalizes to "{id}").
func TestNormalizeIdempotent(t *testing.T) {
	f := func(raw, want string) {
		t.Helper()
		got := NormalizeCommand("", raw)
		if got != want {
			t.Errorf("NormalizeCommand(%q) = %q, want %q", raw, got, want)
		}
		if again := NormalizeCommand("", got); again != got {
			t.Errorf("NormalizeCommand(%q) = %q, but normalizing it again gives %q", raw, got, again)
		}
	}
	f("0 ?", Placeholder)
	f("0 ?a=1", Placeholder)
	f("GET ?x", "GET")
	f("get  ?", "GET")
	f("GET /x ?a", "GET /x")
	f("0 x ?", "0 x")
	f("POST /v1/d-17/unlock?x=1", "POST /v1/{id}/unlock")
}

// BenchmarkSetRawCommand normalizes a simulated fleet's request: the
// normalizer's share of decoding a line.
func BenchmarkSetRawCommand(b *testing.B) {
	var ev Event
	method, path := []byte("POST"), []byte("/v1/devices/therm-000042/telemetry")
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		ev.Reset()
		ev.SetRawCommand(method, path)
	}
	cpu.Report(b)
}
