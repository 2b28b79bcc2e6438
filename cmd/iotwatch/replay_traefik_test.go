package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestReplayTraefikVerdicts: the forwardAuth verdicts in a Traefik JSON access
// log keep the enforcement point's own answers out of the devices' scores.
// Ten devices behind deploy/traefik (identity X-Device-Id) make two hours of
// ordinary requests, then for 60 s every request of theirs gets an answer
// that is not their doing: forwardAuth's 500 while the enforcer is down
// (OriginStatus 0), or the enforcer's 403 with X-Iotwatch-Action. Neither
// raises an alert. The same minute with the service's own 500s on one
// device, or the service's own 403s, does (error_burst, auth_failures): the
// verdict, not the status, makes the difference. (The service's own 500s on
// all ten at once are a backend incident: volume's fleet_errors, no alert.)
func TestReplayTraefikVerdicts(t *testing.T) {
	t0 := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	rec := func(at time.Time, dev, status, origin int, action string) string {
		extra := ""
		if action != "" {
			extra = `,"downstream_X-Iotwatch-Action":"` + action + `"`
		}
		return fmt.Sprintf(`{"ClientAddr":"203.0.113.%d:51234","ClientHost":"203.0.113.%d","DownstreamContentSize":96,"DownstreamStatus":%d,`+
			`"Duration":3000000,"OriginStatus":%d,"RequestContentSize":0,"RequestMethod":"GET","RequestPath":"/v1/devices/lock-%d/state",`+
			`"RequestProtocol":"HTTP/1.1","StartUTC":%q%s,"level":"info","msg":"","request_X-Device-Id":"lock-%d","time":%q}`,
			dev, dev, status, origin, dev, at.Format(time.RFC3339Nano), extra, dev, at.Format(time.RFC3339))
	}
	alerts := func(status, origin int, action string, failing int) (int, string) {
		t.Helper()
		var b strings.Builder
		for i := range 240 { // two hours, a request every 30 s
			for dev := range 10 {
				fmt.Fprintln(&b, rec(t0.Add(time.Duration(30*i+dev)*time.Second), dev, 200, 200, ""))
			}
		}
		t1 := t0.Add(2 * time.Hour)
		for s := 0; s < 60; s += 2 { // the minute in question, at a retrying client's pace
			for dev := range 10 {
				at := t1.Add(time.Duration(s)*time.Second + time.Duration(dev)*10*time.Millisecond)
				if dev < failing {
					fmt.Fprintln(&b, rec(at, dev, status, origin, action))
				} else if s%30 == 0 {
					fmt.Fprintln(&b, rec(at, dev, 200, 200, ""))
				}
			}
		}
		dir := t.TempDir()
		in, out := filepath.Join(dir, "access.log"), filepath.Join(dir, "out.jsonl")
		if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		args := []string{"replay", "--format", "traefik", "--identity", "auto,traefik=header:X-Device-Id", "--out", out, in}
		if code := mainExit(args, &stdout, &stderr); code != 0 {
			t.Fatalf("replay: exit %d: %s", code, stderr.String())
		}
		dec, err := formats.New(schemas.FormatTraefik, formats.Options{Identity: "header:X-Device-Id"})
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		for i, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			_, id, _ := strings.Cut(line, `"request_X-Device-Id":"`)
			id, _, _ = strings.Cut(id, `"`)
			if err := dec.Decode([]byte(line), 1, uint32(i), 0, &ev); err != nil || id == "" || string(ev.Device) != id {
				t.Fatalf("line %d: device %q, %v: every line must decode to its device", i, ev.Device, err)
			}
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(got), `"kind":"alert"`), string(got)
	}
	if n, out := alerts(500, 0, "", 10); n != 0 {
		t.Errorf("enforcer outage (500, OriginStatus 0): %d alerts, want none:\n%.2000s", n, out)
	}
	if n, out := alerts(403, 0, "block", 10); n != 0 {
		t.Errorf("enforced deny (403 with X-Iotwatch-Action): %d alerts, want none:\n%.2000s", n, out)
	}
	if n, out := alerts(500, 500, "", 10); n != 0 {
		t.Errorf("backend incident (the service's own 500s to all ten at once): %d alerts, want none:\n%.2000s", n, out)
	}
	if n, _ := alerts(500, 500, "", 1); n == 0 {
		t.Error("the service's own 500s raised no alert: the test proves nothing")
	}
	if n, _ := alerts(403, 403, "", 10); n == 0 {
		t.Error("the service's own 403s raised no alert: the test proves nothing")
	}
}
