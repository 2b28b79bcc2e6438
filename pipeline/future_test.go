package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestFutureLineIsDeadLettered reproduces issue 13 item 3: among two meters'
// normal traffic, one line of meter-b stamped 23 hours after now. It is
// dead-lettered (timestamp_out_of_range): no false silence, no decision, and
// every other event is scored.
func TestFutureLineIsDeadLettered(t *testing.T) {
	e := setup(t, "future")
	ctx := context.Background()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	var lines []string
	events := 0
	for at := time.Duration(0); at < 2*time.Hour; at += time.Minute {
		for _, device := range []string{"meter-a", "meter-b"} {
			lines = append(lines, line(device, at, ""))
			events++
		}
		if at == time.Hour {
			lines = append(lines, strings.Replace(line("meter-b", at, ""), base.Add(at).Format(time.RFC3339Nano),
				time.Now().Add(23*time.Hour).UTC().Format(time.RFC3339Nano), 1))
		}
		if len(lines) >= 100 {
			if _, err := e.js.Publish(ctx, subject, []byte(strings.Join(lines, "\n"))); err != nil {
				t.Fatal(err)
			}
			lines = nil
		}
	}
	if _, err := e.js.Publish(ctx, subject, []byte(strings.Join(lines, "\n"))); err != nil {
		t.Fatal(err)
	}
	p := e.run(t, pipeline.Config{Workers: 1, FlushInterval: 50 * time.Millisecond})
	if got := p.M.DeadLettered.Load(); got != 1 {
		t.Errorf("%d lines dead-lettered, want the future one", got)
	}
	if got := p.M.Silences.Load(); got != 0 {
		t.Errorf("%d silences swept, want none", got)
	}
	if got := p.M.Decisions.Load(); got != 0 {
		t.Errorf("%d decisions, want none", got)
	}
	if n := e.count(t, schemas.TableScored); n != uint64(events) {
		t.Errorf("%d scored rows, want %d", n, events)
	}
	s, err := e.js.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, schemas.SubjectDLQPrefix+"."+bus.SubjectToken(schemas.DeadLetterTimestampOutOfRange))
	if err != nil {
		t.Fatalf("no dead letter for the future line: %v", err)
	}
	letters, err := schemas.ParseDeadLetters(nil, m.Data, schemas.DeadLetterTimestampOutOfRange)
	if err != nil || len(letters) != 1 || letters[0].Detail != schemas.DetailTimeTooFuture {
		t.Errorf("dead letters %+v (%v), want one with the detail %q", letters, err, schemas.DetailTimeTooFuture)
	}
}
