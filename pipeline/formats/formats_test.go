package formats

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/threadcpu"
	"github.com/iotwatch/iotwatch/schemas"
)

var update = flag.Bool("update", false, "rewrite the testdata/<format>/*.golden files")

var now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).UnixNano() // after every sample, real-nginx-* included

// TestGolden decodes every testdata/<format>/*.log (options from the .options
// file next to it, key=value lines) and compares a rendering of each record's
// event or error with the .golden file.
func TestGolden(t *testing.T) {
	logs, err := filepath.Glob("testdata/*/*.log")
	if err != nil || len(logs) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	covered := map[string]bool{}
	for _, path := range logs {
		format := filepath.Base(filepath.Dir(path))
		covered[format] = true
		t.Run(format+"/"+filepath.Base(path), func(t *testing.T) {
			d, recs := sampleLog(t, path)
			var out bytes.Buffer
			var ev schemas.Event
			for i, rec := range recs {
				err := d.Decode(rec, 7, uint32(i), now, &ev)
				fmt.Fprintf(&out, "%d: ", i)
				var de *schemas.DecodeError
				switch {
				case err == nil:
					checkDerived(t, &ev, 7, uint32(i))
					out.WriteString(render(&ev))
				case errors.Is(err, ErrSkip):
					out.WriteString("skip")
				case errors.As(err, &de):
					fmt.Fprintf(&out, "error %s: %s", de.Reason, de.Detail)
				default:
					t.Fatalf("record %d: error %v is not a DecodeError", i, err)
				}
				out.WriteByte('\n')
			}
			golden := strings.TrimSuffix(path, ".log") + ".golden"
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s differs from the decoded output (run go test -update and review the diff):\n%s", golden, out.Bytes())
			}
		})
	}
	for _, n := range Names() {
		if !covered[n] {
			t.Errorf("format %q has no testdata/%s/*.log", n, n)
		}
	}
}

// sampleLog returns the records of testdata/<format>/<name>.log and a decoder
// of that format configured by the .options file next to it.
func sampleLog(t *testing.T, path string) (Decoder, [][]byte) {
	t.Helper()
	format := filepath.Base(filepath.Dir(path))
	d, err := New(format, readOptions(t, strings.TrimSuffix(path, ".log")+".options"))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return d, Records(format, nil, msg)
}

func readOptions(t *testing.T, path string) Options {
	var o Options
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return o
	}
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "identity":
			o.Identity = v
		case "country_field":
			o.CountryField = v
		case "class_field":
			o.ClassField = v
		case "tenant":
			o.Tenant = v
		case "source":
			o.Source = v
		case "key_secret":
			o.KeySecret = []byte(v)
		case "time_zone":
			o.TimeZone = v
		default:
			t.Fatalf("%s: unknown option %q", path, k)
		}
	}
	return o
}

// checkDerived asserts the fields schemas.Decoder derives are derived the same way.
func checkDerived(t *testing.T, ev *schemas.Event, seq uint64, line uint32) {
	t.Helper()
	if ev.DeviceKey != schemas.Hash2(ev.Tenant, ev.Device) || ev.DeviceAlt != schemas.Hash2Alt(ev.Tenant, ev.Device) ||
		ev.ClassKey != schemas.Hash2(ev.Tenant, ev.Class) || ev.CommandID != schemas.Hash(ev.Command) ||
		ev.ID != schemas.EventID(seq, line) || ev.Seq != seq || ev.Line != line {
		t.Errorf("line %d: derived fields do not match the event's fields", line)
	}
	if len(ev.Device) == 0 || ev.Time == 0 {
		t.Errorf("line %d: accepted an event without device or time", line)
	}
}

// render is the readable form of an event in golden files.
func render(ev *schemas.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", ev.EventTime().Format(time.RFC3339Nano), ev.Source)
	kv := func(k string, v []byte) {
		if len(v) > 0 {
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
	}
	kv("src_id", ev.SourceID)
	kv("tenant", ev.Tenant)
	fmt.Fprintf(&b, " device=%q id_by=%s", ev.Device, ev.IDMethod)
	kv("api_key", ev.APIKey)
	kv("class", ev.Class)
	kv("fw", ev.Firmware)
	if ev.ClientIP.IsValid() {
		fmt.Fprintf(&b, " ip=%s", ev.ClientIP)
	}
	if ev.Country.Known() {
		fmt.Fprintf(&b, " country=%s", ev.Country)
	}
	fmt.Fprintf(&b, " %s cmd=%q", ev.Protocol, ev.Command)
	if ev.Resource != 0 {
		b.WriteString(" resource")
	}
	fmt.Fprintf(&b, " status=%d auth=%s in=%d out=%d latency=%dus", ev.Status, ev.Auth, ev.BytesIn, ev.BytesOut, ev.Latency)
	if ev.Verdict != schemas.VerdictNone {
		fmt.Fprintf(&b, " verdict=%s", ev.Verdict)
	}
	return b.String()
}

func TestNew(t *testing.T) {
	want := []string{"emqx", "envoy", "json", "kong", "mosquitto", "nginx", "nginx-json", "traefik"}
	if got := Names(); !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	if _, err := New("apache", Options{}); err == nil || !strings.Contains(err.Error(), "nginx-json") {
		t.Errorf("unknown format: err = %v, want one listing the known formats", err)
	}
	if _, err := New("kong", Options{Identity: "fingerprint"}); err == nil {
		t.Error("unknown identity accepted")
	}
}

func TestRecords(t *testing.T) {
	f := func(format, msg string, want ...string) {
		t.Helper()
		var got []string
		for _, r := range Records(format, nil, []byte(msg)) {
			got = append(got, string(r))
		}
		if !slices.Equal(got, want) {
			t.Errorf("Records(%s, %q) = %q, want %q", format, msg, got, want)
		}
	}
	f("kong", `[{"a":1}, {"b":[1,2]} ]`+"\n"+`{"c":"]"}`+"\r\n\n", `{"a":1}`, `{"b":[1,2]}`, `{"c":"]"}`)
	f("kong", `[{"a":1},`, `[{"a":1},`) // malformed: one record, rejected by the decoder
	f("kong", `[]`)
	f("json", `[{"a":1}]`, `[{"a":1}]`)
	f("mosquitto", "[x] a\n  \nb", "[x] a", "b")
}

// TestMosquittoStateBounded checks the client map stays bounded.
func TestMosquittoStateBounded(t *testing.T) {
	d, _ := New("mosquitto", Options{})
	m := d.(*mosquitto)
	var ev schemas.Event
	for i := range maxMosquittoClients + 10 {
		line := fmt.Sprintf("1767607200: New client connected from 192.0.2.1:1 as c%d (p2, c1, k60).", i)
		if err := d.Decode([]byte(line), 1, 0, now, &ev); err != nil {
			t.Fatal(err)
		}
	}
	if len(m.clients) != maxMosquittoClients {
		t.Errorf("%d clients remembered, want the bound %d", len(m.clients), maxMosquittoClients)
	}
	_ = d.Decode([]byte("1767607201: Client c5 disconnected."), 1, 0, now, &ev)
	if _, ok := m.clients["c5"]; ok {
		t.Error("a disconnected client is still remembered")
	}
}

// TestAPIKeyNeverInClear checks that an API key in a log ends up only as its keyed hash.
func TestAPIKeyNeverInClear(t *testing.T) {
	line := []byte(`{"request":{"uri":"/x","method":"GET","headers":{"apikey":"sk_live_secret"}},"client_ip":"192.0.2.1","response":{"status":200},"started_at":1767607200000}`)
	for _, id := range []string{"auto", "api_key"} {
		for _, secret := range []string{"", "k1"} {
			d, err := New("kong", Options{Identity: id, KeySecret: []byte(secret)})
			if err != nil {
				t.Fatal(err)
			}
			var ev schemas.Event
			if err := d.Decode(line, 1, 0, now, &ev); err != nil {
				t.Fatal(err)
			}
			s := render(&ev)
			if strings.Contains(s, "sk_live") {
				t.Errorf("identity %s secret %q: the key is in clear: %s", id, secret, s)
			}
			if secret == "" && ev.IDMethod != schemas.IDClientIP {
				t.Errorf("identity %s without a secret: id_by = %s, want the client_ip fallback", id, ev.IDMethod)
			}
			if secret != "" && (ev.IDMethod != schemas.IDAPIKey || len(ev.Device) != 16 || !bytes.Equal(ev.Device, ev.APIKey)) {
				t.Errorf("identity %s with a secret: device %q by %s, want 16 hex digits by api_key", id, ev.Device, ev.IDMethod)
			}
		}
	}
}

// sample returns the first record of a format's main testdata file.
func sample(tb testing.TB, format, file string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", format, file))
	if err != nil {
		tb.Fatal(err)
	}
	return Records(format, nil, b)[0]
}

var hot = []struct{ format, file string }{
	{"kong", "http-log.log"}, {"kong", "apikey.log"}, {"nginx", "combined.log"}, {"nginx-json", "iotwatch.log"}, {"envoy", "access.log"}, {"envoy", "text.log"},
	{"mosquitto", "mosquitto.log"}, {"emqx", "webhook.log"}, {"json", "canonical.log"}, {"traefik", "access.log"},
}

// TestQueryArgs checks that every gateway format passes a request's numeric
// query parameters ("?nonce=77" in the samples) through as arguments.
func TestQueryArgs(t *testing.T) {
	logs, err := filepath.Glob("testdata/*/*.log")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, path := range logs {
		d, recs := sampleLog(t, path)
		var ev schemas.Event
		for i, rec := range recs {
			if d.Decode(rec, 7, uint32(i), now, &ev) != nil || !bytes.Contains(rec, []byte("?nonce=77")) {
				continue
			}
			found++
			args := ev.ArgList()
			if len(args) != 1 || string(args[0].Name) != "nonce" || args[0].Value != 77 || args[0].Key != schemas.Hash([]byte("nonce")) {
				t.Errorf("%s record %d: args %v, want nonce=77", path, i, args)
			}
		}
	}
	if found < 3 {
		t.Errorf("only %d records with ?nonce=77 decoded: the test checks little", found)
	}
}

func TestZeroAllocs(t *testing.T) {
	for _, h := range hot {
		opts := Options{Tenant: "acme", CountryField: "CF-IPCountry", ClassField: UserAgentProduct, KeySecret: []byte("k")}
		if h.format == "mosquitto" {
			continue // per-stream map; its connect line allocates by design
		}
		d, err := New(h.format, opts)
		if err != nil {
			t.Fatal(err)
		}
		line := sample(t, h.format, h.file)
		var ev schemas.Event
		if err := d.Decode(line, 1, 0, now, &ev); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(200, func() { _ = d.Decode(line, 1, 0, now, &ev) })
		if allocs != 0 {
			t.Errorf("%s: Decode allocates %.1f times per record in steady state, want 0", h.format, allocs)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, h := range hot {
		b.Run(h.format+"/"+strings.TrimSuffix(h.file, ".log"), func(b *testing.B) {
			d, err := New(h.format, Options{Tenant: "acme", ClassField: UserAgentProduct})
			if err != nil {
				b.Fatal(err)
			}
			line := sample(b, h.format, h.file)
			if h.format == "mosquitto" {
				var ev schemas.Event
				_ = d.Decode([]byte("1767607200: New client connected from 203.0.113.5:51234 as dev-17 (p2, c1, k60, u'dev17')."), 1, 0, now, &ev)
				line = []byte("1767607202: Received PUBLISH from dev-17 (d0, q1, r0, m3, 'devices/dev-17/telemetry', ... (12 bytes))")
			}
			var ev schemas.Event
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := threadcpu.Start()
			for b.Loop() {
				if err := d.Decode(line, 1, 0, now, &ev); err != nil {
					b.Fatal(err)
				}
			}
			cpu.Report(b)
		})
	}
}

// fuzzFormat checks that no input panics a decoder, that every failure is a
// DecodeError with a declared reason or ErrSkip, and that accepted events are
// complete and consistently derived.
func fuzzFormat(f *testing.F, format string) {
	if logs, _ := filepath.Glob(filepath.Join("testdata", format, "*.log")); len(logs) > 0 {
		for _, p := range logs {
			b, _ := os.ReadFile(p)
			for _, r := range Records(format, nil, b) {
				f.Add(r)
			}
		}
	}
	reasons := map[string]bool{schemas.DeadLetterTooLarge: true, schemas.DeadLetterMalformedJSON: true, schemas.DeadLetterNotObject: true,
		schemas.DeadLetterUnsupportedVersion: true, schemas.DeadLetterMissingField: true, schemas.DeadLetterBadField: true, schemas.DeadLetterBadTimestamp: true,
		schemas.DeadLetterTimestampOutOfRange: true, schemas.DeadLetterInvalidUTF8: true, schemas.DeadLetterMalformedLine: true}
	opts := Options{CountryField: "CF-IPCountry", ClassField: UserAgentProduct, KeySecret: []byte("k")}
	f.Fuzz(func(t *testing.T, line []byte) {
		d, err := New(format, opts) // per input, so that a stateful decoder's failures reproduce
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		for _, rec := range Records(format, nil, line) {
			err := d.Decode(rec, 3, 1, now, &ev)
			var de *schemas.DecodeError
			switch {
			case err == nil:
				checkDerived(t, &ev, 3, 1)
			case errors.Is(err, ErrSkip):
			case errors.As(err, &de) && reasons[de.Reason]:
			default:
				t.Fatalf("undeclared error %v", err)
			}
		}
	})
}

func FuzzKong(f *testing.F)      { fuzzFormat(f, "kong") }
func FuzzNginx(f *testing.F)     { fuzzFormat(f, "nginx") }
func FuzzNginxJSON(f *testing.F) { fuzzFormat(f, "nginx-json") }
func FuzzEnvoy(f *testing.F)     { fuzzFormat(f, "envoy") }
func FuzzMosquitto(f *testing.F) { fuzzFormat(f, "mosquitto") }
func FuzzEMQX(f *testing.F)      { fuzzFormat(f, "emqx") }
func FuzzTraefik(f *testing.F)   { fuzzFormat(f, "traefik") }
