package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReplayIsDeterministic replays a simulated fleet's log twice: the same
// alerts and decisions, byte for byte, and the injected attacks among them.
func TestReplayIsDeterministic(t *testing.T) {
	in, fl := fleetLog(t, 200, 8*time.Hour)
	f, err := os.OpenFile(in, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("{\"ts\":\"not a time\",\"device\":\"d-1\"}\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dir := t.TempDir()
	run := func(name string) []byte {
		out := filepath.Join(dir, name)
		var stdout, stderr bytes.Buffer
		if code := mainExit([]string{"replay", "--out", out, in}, &stdout, &stderr); code != 0 {
			t.Fatalf("replay exited %d: %s", code, stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first, second := run("a.jsonl"), run("b.jsonl")
	if !bytes.Equal(first, second) {
		t.Fatal("two replays of the same log differ")
	}
	devices := map[string]bool{}
	kinds := map[string]int{}
	grouped := 0 // alerts in the incidents
	sc := bufio.NewScanner(bytes.NewReader(first))
	for sc.Scan() {
		var rec struct {
			Kind     string `json:"kind"`
			Device   string `json:"device"`
			Severity string `json:"severity"`
			Reasons  []struct {
				Reason   string  `json:"reason"`
				Observed float64 `json:"observed"`
				Expected float64 `json:"expected"`
			} `json:"reasons"`
			Decision *struct {
				Scope, Value, Action string
			} `json:"decision"`
			Incident *struct {
				ID      string `json:"id"`
				Alerts  int    `json:"alerts"`
				Devices int    `json:"devices"`
			} `json:"incident"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		kinds[rec.Kind]++
		switch rec.Kind {
		case "alert":
			if rec.Severity == "" || len(rec.Reasons) == 0 || rec.Reasons[0].Reason == "" {
				t.Errorf("alert without severity or reasons: %s", sc.Text())
			}
			devices[rec.Device] = true
		case "decision":
			if rec.Decision == nil || rec.Decision.Scope == "" || rec.Decision.Value == "" || rec.Decision.Action == "" {
				t.Errorf("decision without scope, value or action: %s", sc.Text())
			}
		case "incident":
			if rec.Incident == nil || rec.Incident.ID == "" || rec.Incident.Alerts == 0 || rec.Incident.Devices == 0 {
				t.Errorf("incident without id, alerts or devices: %s", sc.Text())
			} else {
				grouped += rec.Incident.Alerts
			}
		default:
			t.Errorf("unknown kind %q", rec.Kind)
		}
	}
	if kinds["alert"] == 0 || kinds["decision"] == 0 || kinds["incident"] == 0 {
		t.Fatalf("replay produced %v", kinds)
	}
	if grouped != kinds["alert"] || kinds["incident"] > kinds["alert"] {
		t.Errorf("%d incidents group %d alerts; want every one of the %d alerts in one", kinds["incident"], grouped, kinds["alert"])
	}
	hit := 0
	for _, l := range fl.Labels() {
		if devices[l.Device] {
			hit++
		}
	}
	if hit == 0 {
		t.Errorf("none of the %d attacked devices has an alert", len(fl.Labels()))
	}
}
