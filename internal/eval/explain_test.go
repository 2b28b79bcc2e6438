package eval

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestPrintFalse: the false alert list names, per alert, its time, device,
// class, near miss and each finding's observed and expected values.
func TestPrintFalse(t *testing.T) {
	r := &AttacksResult{FalseList: []falseAlert{
		{
			Time: time.Date(2026, 1, 5, 0, 30, 21, 0, time.UTC), Device: "lum-000013", Score: 0.87,
			Class: "camera/lumen-c4",
			Explanations: []schemas.Explanation{
				{Detector: "upload", Reason: "bytes_in_burst", Score: 0.85, Observed: 738149, Expected: 4096},
				{Detector: "command", Reason: "new_command", Score: 0.1, Observed: 19.8, Expected: 35.6, ObservedLabel: "/{id}/clips"},
			},
		},
		{
			Time: time.Date(2026, 1, 5, 7, 45, 53, 0, time.UTC), Device: "nest-000465", Score: 0.8,
			Reasons: "command/privileged_command_new", NearMiss: "rollout",
		},
	}}
	var out bytes.Buffer
	r.PrintFalse(&out)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "False alerts (2)") {
		t.Fatalf("got %d lines:\n%s", len(lines), out.String())
	}
	for _, want := range []string{"2026-01-05 00:30:21", "lum-000013", "camera/lumen-c4", "0.87",
		"upload/bytes_in_burst 0.85 (7.381e+05 / 4096)", "command/new_command 0.10 (/{id}/clips 19.8 / 35.6)"} {
		if !strings.Contains(lines[3], want) {
			t.Errorf("first alert's line lacks %q:\n%s", want, lines[3])
		}
	}
	for _, want := range []string{"nest-000465", "rollout", "command/privileged_command_new"} {
		if !strings.Contains(lines[4], want) {
			t.Errorf("second alert's line lacks %q:\n%s", want, lines[4])
		}
	}
	var empty bytes.Buffer
	(&AttacksResult{}).PrintFalse(&empty)
	if got := strings.TrimSpace(empty.String()); got != "False alerts (0), by event time:" {
		t.Errorf("no false alerts: got %q", got)
	}
}
