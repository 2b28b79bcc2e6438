package schemas

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
)

const sampleLine = `{"v":1,"ts":"2026-01-05T10:00:00.250Z","src":"gateway","src_id":"kong-eu-1","tenant":"acme","device":"lock-000042","id_by":"api_key","api_key":"key-7f3a","class":"smart_lock/acme-l2","fw":"2.4.1","ip":"203.0.113.7","country":"de","asn":3320,"proto":"http","method":"post","path":"/v1/devices/lock-000042/unlock?nonce=77","status":200,"auth":"ok","bytes_in":312,"bytes_out":1024,"latency_ms":12.5,"extra":{"ignored":[1,2]}}`

var now = time.Date(2026, 1, 5, 12, 0, 0, 0, time.UTC).UnixNano()

func TestDecodeCanonical(t *testing.T) {
	var d Decoder
	var ev Event
	if err := d.Decode([]byte(sampleLine), 77, 3, now, &ev); err != nil {
		t.Fatal(err)
	}
	want := time.Date(2026, 1, 5, 10, 0, 0, 250e6, time.UTC).UnixNano()
	if ev.Time != want {
		t.Errorf("Time = %v, want %v", ev.EventTime(), time.Unix(0, want).UTC())
	}
	checks := []struct{ name, got, want string }{
		{"source", ev.Source.String(), "gateway"},
		{"source id", string(ev.SourceID), "kong-eu-1"},
		{"tenant", string(ev.Tenant), "acme"},
		{"device", string(ev.Device), "lock-000042"},
		{"id method", ev.IDMethod.String(), "api_key"},
		{"api key", string(ev.APIKey), "key-7f3a"},
		{"class", string(ev.Class), "smart_lock/acme-l2"},
		{"firmware", string(ev.Firmware), "2.4.1"},
		{"ip", ev.ClientIP.String(), "203.0.113.7"},
		{"country", ev.Country.String(), "DE"},
		{"protocol", ev.Protocol.String(), "http"},
		{"command", string(ev.Command), "POST /v1/devices/{id}/unlock"},
		{"auth", ev.Auth.String(), "ok"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if ev.ASN != 3320 || ev.Status != 200 || ev.BytesIn != 312 || ev.BytesOut != 1024 || ev.Latency != 12500 {
		t.Errorf("numbers: asn=%d status=%d in=%d out=%d latency=%d", ev.ASN, ev.Status, ev.BytesIn, ev.BytesOut, ev.Latency)
	}
	if ev.ID != EventID(77, 3) || ev.Seq != 77 || ev.Line != 3 {
		t.Errorf("ID = %x, want %x", ev.ID, EventID(77, 3))
	}
	if ev.Resource == 0 {
		t.Error("Resource = 0, want the hash of the replaced device id")
	}
	if ev.DeviceKey != Hash2([]byte("acme"), []byte("lock-000042")) || ev.CommandID != Hash(ev.Command) {
		t.Error("derived hashes do not match the fields")
	}
}

// TestDecodeProducerIDCannotChooseEventID: a record's own "id" does not
// make its Event.ID (issue 13 item 7: a producer that sent another's id
// replaced the row behind an alert, ReplacingMergeTree keeping the
// attacker's version). The id comes from the stream position alone, so two
// records with the same "id" at different positions never share a row.
func TestDecodeProducerIDCannotChooseEventID(t *testing.T) {
	var d Decoder
	var a, b Event
	line := []byte(`{"id":"r-1","ts":1767607200.5,"device":"d-1"}`)
	if err := d.Decode(line, 1, 0, now, &a); err != nil {
		t.Fatal(err)
	}
	if err := d.Decode(line, 999, 4, now, &b); err != nil {
		t.Fatal(err)
	}
	if a.ID != EventID(1, 0) || b.ID != EventID(999, 4) {
		t.Errorf("IDs %x, %x; want %x, %x (the stream positions), whatever the record's own id", a.ID, b.ID, EventID(1, 0), EventID(999, 4))
	}
	if a.Time != 1767607200*int64(time.Second)+int64(500*time.Millisecond) {
		t.Errorf("numeric ts decoded as %v", a.EventTime())
	}
}

func TestDecodeRejects(t *testing.T) {
	f := func(name, line, reason string) {
		t.Helper()
		var d Decoder
		var ev Event
		err := d.Decode([]byte(line), 1, 0, now, &ev)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: err = %v, want a DecodeError %q", name, err, reason)
			return
		}
		if de.Reason != reason {
			t.Errorf("%s: reason = %q (%s), want %q", name, de.Reason, de.Detail, reason)
		}
	}
	f("malformed", `{"ts":`, DeadLetterMalformedJSON)
	f("array", `[1,2]`, DeadLetterNotObject)
	f("no device", `{"ts":"2026-01-05T10:00:00Z"}`, DeadLetterMissingField)
	f("no time", `{"device":"d-1"}`, DeadLetterMissingField)
	f("bad time", `{"ts":"yesterday","device":"d-1"}`, DeadLetterBadTimestamp)
	f("bad date", `{"ts":"2026-02-30T10:00:00Z","device":"d-1"}`, DeadLetterBadTimestamp)
	f("ancient", `{"ts":"1971-01-05T10:00:00Z","device":"d-1"}`, DeadLetterTimestampOutOfRange)
	f("future", `{"ts":"2031-01-05T10:00:00Z","device":"d-1"}`, DeadLetterTimestampOutOfRange)
	f("invalid utf8", "{\"ts\":\"2026-01-05T10:00:00Z\",\"device\":\"d-\xff\"}", DeadLetterInvalidUTF8)
	f("oversized", `{"ts":"2026-01-05T10:00:00Z","device":"`+string(bytes.Repeat([]byte("x"), DefaultMaxLineBytes))+`"}`, DeadLetterTooLarge)
	f("bad ip", `{"ts":"2026-01-05T10:00:00Z","device":"d-1","ip":"999.1.1.1"}`, DeadLetterBadField)
	f("bad country", `{"ts":"2026-01-05T10:00:00Z","device":"d-1","country":"Germany"}`, DeadLetterBadField)
	f("bad version", `{"v":2,"ts":"2026-01-05T10:00:00Z","device":"d-1"}`, DeadLetterUnsupportedVersion)
	f("string number", `{"ts":"2026-01-05T10:00:00Z","device":"d-1","status":"200"}`, DeadLetterBadField)
	f("negative bytes", `{"ts":"2026-01-05T10:00:00Z","device":"d-1","bytes_in":-5}`, DeadLetterBadField)
	f("device not string", `{"ts":"2026-01-05T10:00:00Z","device":17}`, DeadLetterBadField)
}

func TestDecodeClientIPIdentity(t *testing.T) {
	var d Decoder
	var ev Event
	if err := d.Decode([]byte(`{"ts":"2026-01-05T10:00:00+02:00","id_by":"client_ip","ip":"2001:db8::1"}`), 1, 0, now, &ev); err != nil {
		t.Fatal(err)
	}
	if string(ev.Device) != "2001:db8::1" || ev.IDMethod != IDClientIP {
		t.Errorf("device = %q by %v, want the IP", ev.Device, ev.IDMethod)
	}
	if got := ev.EventTime(); !got.Equal(time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("offset time = %v", got)
	}
}

func TestRoundTrip(t *testing.T) {
	var d Decoder
	var a, b Event
	if err := d.Decode([]byte(sampleLine), 5, 0, now, &a); err != nil {
		t.Fatal(err)
	}
	enc := AppendJSON(nil, &a)
	if err := d.Decode(enc, 5, 0, now, &b); err != nil {
		t.Fatalf("cannot decode %s: %v", enc, err)
	}
	if !equalEvents(&a, &b) {
		t.Errorf("round trip changed the event:\n%s\n%s", AppendJSON(nil, &a), AppendJSON(nil, &b))
	}
}

// TestVerdict checks the enforcement point's verdict: every name decodes to
// its value and survives a round trip, absent is none, and an unknown name is
// a bad field (a producer's typo must not pass as "none").
func TestVerdict(t *testing.T) {
	f := func(field string, want Verdict) {
		t.Helper()
		var d Decoder
		var ev, back Event
		line := `{"ts":1767607200,"device":"d-1","status":403` + field + `}`
		if err := d.Decode([]byte(line), 1, 0, now, &ev); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if ev.Verdict != want {
			t.Errorf("%s: verdict %v, want %v", line, ev.Verdict, want)
		}
		if want.Enforced() != (want == VerdictDenied || want == VerdictUnavailable) {
			t.Errorf("%v.Enforced() = %v", want, want.Enforced())
		}
		enc := AppendJSON(nil, &ev)
		if err := d.Decode(enc, 1, 0, now, &back); err != nil || back.Verdict != want {
			t.Errorf("round trip of %s: verdict %v, err %v; want %v", enc, back.Verdict, err, want)
		}
	}
	f(``, VerdictNone)
	f(`,"verdict":"none"`, VerdictNone)
	f(`,"verdict":"allowed"`, VerdictAllowed)
	f(`,"verdict":"denied"`, VerdictDenied)
	f(`,"verdict":"enforcer_unavailable"`, VerdictUnavailable)

	var d Decoder
	var ev Event
	err := d.Decode([]byte(`{"ts":1767607200,"device":"d-1","verdict":"blocked"}`), 1, 0, now, &ev)
	var de *DecodeError
	if !errors.As(err, &de) || de.Reason != DeadLetterBadField {
		t.Errorf("unknown verdict: err %v, want a %s", err, DeadLetterBadField)
	}
}

func equalEvents(a, b *Event) bool {
	return bytes.Equal(AppendJSON(nil, a), AppendJSON(nil, b)) && a.DeviceKey == b.DeviceKey &&
		a.CommandID == b.CommandID && a.ClassKey == b.ClassKey && a.Time == b.Time
}

func TestDecodeZeroAllocs(t *testing.T) {
	var d Decoder
	var ev Event
	line := []byte(sampleLine)
	_ = d.Decode(line, 1, 0, now, &ev) // warm up buffers
	allocs := testing.AllocsPerRun(1000, func() {
		if err := d.Decode(line, 1, 0, now, &ev); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Decode allocates %.1f times per event in steady state, want 0", allocs)
	}
}

func BenchmarkDecode(b *testing.B) {
	var d Decoder
	var ev Event
	line := []byte(sampleLine)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		if err := d.Decode(line, 1, 0, now, &ev); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b)
}

// fleetLine is a line of the simulated fleet (internal/sim), as the
// per-event path benchmark decodes: no query, no args, no nested member.
const fleetLine = `{"ts":"2026-01-05T00:00:00.026Z","src":"gateway","src_id":"kong-ap-1","tenant":"globex","device":"therm-000337","id_by":"api_key","api_key":"key-ebf1f75e44c7e166","class":"thermostat/acme-t100","fw":"2.4.1","ip":"126.33.46.153","country":"JP","asn":17676,"proto":"http","method":"POST","path":"/v1/devices/therm-000337/telemetry","status":201,"auth":"ok","bytes_in":393,"bytes_out":52,"latency_ms":25.0}`

// BenchmarkDecodeFleetLine is BenchmarkDecode on fleetLine.
func BenchmarkDecodeFleetLine(b *testing.B) {
	var d Decoder
	var ev Event
	line := []byte(fleetLine)
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	cpu := threadcpu.Start()
	for b.Loop() {
		if err := d.Decode(line, 1, 0, now, &ev); err != nil {
			b.Fatal(err)
		}
	}
	cpu.Report(b)
}

// FuzzDecode checks that no input panics the decoder, that every rejection is a
// DecodeError with a declared reason, and that accepted events survive a round trip.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(sampleLine))
	f.Add([]byte(fleetLine))
	f.Add([]byte(`{"ts":"2026-01-05T10:00:00Z","device":"t","status":403,"verdict":"denied"}`))
	f.Add([]byte(`{"ts":1767607200,"device":"d","proto":"mqtt","op":"PUBLISH","topic":"devices/d-1/cmd/#"}`))
	f.Add([]byte(`{"ts":"2026-01-05T10:00:00Z","id_by":"client_ip","ip":"::1"}`))
	f.Add([]byte(`{"ts":"2026-01-05T10:00:00.123456789-11:30","device":"\u00e9\n","cmd":"get  //x/12?"}`))
	f.Add([]byte(`{"ts":"2026-01-05T10:00:00Z","device":"t","cmd":"POST /t/1/set?temp=90.5&a=-0","args":{"fan":1e-7,"mode":"eco","t\u0065mp":2}}`))
	f.Add([]byte(`{"ts":"2026-01-05T10:00:00Z","device":"t","status":403,"verdict":"denied"}`))
	reasons := map[string]bool{DeadLetterTooLarge: true, DeadLetterMalformedJSON: true, DeadLetterNotObject: true, DeadLetterUnsupportedVersion: true,
		DeadLetterMissingField: true, DeadLetterBadField: true, DeadLetterBadTimestamp: true, DeadLetterTimestampOutOfRange: true, DeadLetterInvalidUTF8: true}
	f.Fuzz(func(t *testing.T, line []byte) {
		var d Decoder
		var ev, back Event
		err := d.Decode(line, 1, 0, now, &ev)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || !reasons[de.Reason] {
				t.Fatalf("undeclared error %v", err)
			}
			return
		}
		if len(ev.Device) == 0 || ev.Time == 0 {
			t.Fatalf("accepted an event without device or time: %q", line)
		}
		enc := AppendJSON(nil, &ev)
		if err := d.Decode(enc, 1, 0, now, &back); err != nil {
			t.Fatalf("cannot decode re-encoded %s: %v", enc, err)
		}
		if !bytes.Equal(AppendJSON(nil, &back), enc) {
			t.Fatalf("round trip differs:\n%s\n%s", enc, AppendJSON(nil, &back))
		}
	})
}
