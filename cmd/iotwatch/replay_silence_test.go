package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestReplaySweepsSilentDevices: replay sweeps silent devices on event time as
// the live pipeline does. A meter reporting every minute stops after two hours
// while another goes on for four; with the alert threshold at the silence's
// score, the replay's one alert is that meter's silence, 30 minutes (volume's
// MinSilence) after its last event, named with its last event's identity.
func TestReplaySweepsSilentDevices(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	var log bytes.Buffer
	for at := time.Duration(0); at < 4*time.Hour; at += time.Minute {
		for _, device := range []string{"meter-000157", "meter-000158"} {
			if device == "meter-000157" && at >= 2*time.Hour {
				continue
			}
			var ev schemas.Event
			ev.SetDevice([]byte("acme"), []byte(device))
			ev.SetClass([]byte("meter/m1"))
			ev.SetText(&ev.APIKey, []byte("key-"+device))
			ev.SetCommand([]byte("POST /v1/devices/{id}/readings"))
			ev.Source, ev.IDMethod, ev.Protocol = schemas.SourceGateway, schemas.IDAPIKey, schemas.ProtoHTTP
			ev.Auth, ev.Status, ev.BytesOut = schemas.AuthOK, 200, 120
			ev.Time = t0.Add(at).UnixNano()
			log.Write(schemas.AppendJSON(nil, &ev))
			log.WriteByte('\n')
		}
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.jsonl"), filepath.Join(dir, "out.jsonl")
	if err := os.WriteFile(in, log.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	threshold := fmt.Sprint(volume.SilenceMinScore)
	if code := mainExit([]string{"replay", "--alert-threshold", threshold, "--out", out, in}, &stdout, &stderr); code != 0 {
		t.Fatalf("replay exited %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var alerts []schemas.Alert
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var rec replayRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		if rec.Kind == "alert" {
			alerts = append(alerts, *rec.Alert)
		}
	}
	if len(alerts) != 1 {
		t.Fatalf("replay raised %d alerts, want the one silence:\n%s", len(alerts), b)
	}
	a := alerts[0]
	wantAt := t0.Add(2*time.Hour - time.Minute).Add(time.Duration(volume.MinSilence) * time.Second)
	if a.Device != "meter-000157" || a.Tenant != "acme" || a.APIKey != "key-meter-000157" || a.Class != "meter/m1" ||
		a.Command != "" || len(a.Reasons) != 1 || a.Reasons[0].Reason != volume.ReasonSilence {
		t.Errorf("alert %+v: want meter-000157's silence, named as its last event, without a command", a)
	}
	if d := a.Time.Sub(wantAt); d < 0 || d > time.Microsecond {
		t.Errorf("silence alert at %v, want %v", a.Time, wantAt)
	}
}
