package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/sim"
)

// TestDemoEndToEnd runs `iotwatch demo` on a small fleet through the real
// embedded NATS server and a real private ClickHouse, and checks what a new
// user would look at: every event scored, the bad records dead-lettered, one
// report line per labelled attack, read back from ClickHouse.
func TestDemoEndToEnd(t *testing.T) {
	if _, err := chserver.Available(); err != nil {
		t.Fatalf("the demo needs a real ClickHouse: %v", err)
	}
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	code := mainExit([]string{"demo", "--devices", "300", "--duration", "8h", "--dir", dir, "--log-level", "warn"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	report := out.String()
	f, err := os.Open(filepath.Join(dir, "labels.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	labels, err := sim.ReadLabels(f)
	if err != nil || len(labels) == 0 {
		t.Fatalf("labels file: %d labels, %v", len(labels), err)
	}
	for _, l := range labels {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(l.ID) + `\s+` + l.Type + `\s+`).MatchString(report) {
			t.Errorf("the report has no line for attack %s (%s)", l.ID, l.Type)
		}
	}
	m := regexp.MustCompile(`Detected (\d+) of (\d+) attacks`).FindStringSubmatch(report)
	if m == nil || m[2] != strconv.Itoa(len(labels)) {
		t.Fatalf("the report lacks its summary for %d attacks:\n%s", len(labels), report)
	}
	if detected, _ := strconv.Atoi(m[1]); detected == 0 {
		t.Errorf("no attack detected:\n%s", report)
	}
	if !strings.Contains(report, strconv.Itoa(len(demoBadRecords))+" lines dead-lettered") {
		t.Errorf("the %d bad records were not all dead-lettered:\n%s", len(demoBadRecords), report)
	}
	if _, err := os.Stat(filepath.Join(dir, "report.txt")); err != nil {
		t.Errorf("no report.txt: %v", err)
	}
}
