package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

var mosquittoLines = "1767607200: New connection from 198.51.100.9:40000 on port 1883.\n" +
	"1767607200: Client intruder [198.51.100.9:40000] disconnected: not authorised.\n" +
	"1767607201: Received PINGREQ from dev-17\n" +
	"junk\n"

// lines decodes the printer's output, one JSON object per line.
func lines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var got []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("output line is not JSON: %v: %s", err, l)
		}
		got = append(got, m)
	}
	return got
}

func TestReader(t *testing.T) {
	var out bytes.Buffer
	p := &Printer{Format: schemas.FormatMosquitto, W: &out, Skipped: true}
	if err := p.Reader(strings.NewReader(mosquittoLines), time.Now().UnixNano(), 1<<20); err != nil {
		t.Fatal(err)
	}
	got := lines(t, out.Bytes())
	if len(got) != 4 || p.Events != 1 || p.DeadLetters != 1 || p.Skips != 2 {
		t.Fatalf("events %d dead letters %d skips %d:\n%s", p.Events, p.DeadLetters, p.Skips, out.Bytes())
	}
	if got[1]["device"] != "intruder" || got[1]["auth"] != "failed" {
		t.Errorf("the auth failure: %v", got[1])
	}
	dl, _ := got[3]["dead_letter"].(map[string]any)
	if dl["reason"] != schemas.DeadLetterBadTimestamp || dl["record"] != "junk" || dl["seq"] != 4.0 {
		t.Errorf("the dead letter: %v", got[3])
	}
	if _, ok := got[0]["skipped"]; !ok {
		t.Errorf("the skipped line: %v", got[0])
	}
}

// TestSubject publishes to the real embedded NATS and checks that inspect
// reads a subject without consuming it: the pipeline's durable consumer
// still has every message pending afterwards.
func TestSubject(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang bound
	defer cancel()
	subj := bus.LogSubject(schemas.FormatMosquitto, "mqtt-1")
	for _, msg := range []string{mosquittoLines, "1767607202: Client dev-17 [203.0.113.5:1] disconnected.\n"} {
		if _, err := env.JS.Publish(ctx, subj, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := env.JS.Publish(ctx, bus.LogSubject("apache", "web-1"), []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p := &Printer{W: &out}
	if err := p.Subject(ctx, env.JS, SubjectOptions{Subject: schemas.SubjectLogsAll}); err != nil {
		t.Fatal(err)
	}
	if p.Events != 2 || p.DeadLetters != 2 || p.Skips != 2 {
		t.Fatalf("events %d dead letters %d skips %d:\n%s", p.Events, p.DeadLetters, p.Skips, out.Bytes())
	}
	got := lines(t, out.Bytes())
	if dl, _ := got[len(got)-1]["dead_letter"].(map[string]any); dl["reason"] != schemas.DeadLetterUnknownFormat {
		t.Errorf("a message of an unknown format: %v", got[len(got)-1])
	}
	if got[0]["source_id"] != nil && got[0]["source_id"] != "mqtt-1" {
		t.Errorf("source id from the subject: %v", got[0])
	}

	out.Reset()
	p = &Printer{W: &out}
	if err := p.Subject(ctx, env.JS, SubjectOptions{Subject: subj, Last: 1}); err != nil {
		t.Fatal(err)
	}
	if p.Events != 1 || !strings.Contains(out.String(), "dev-17") {
		t.Errorf("--last 1: %s", out.Bytes())
	}

	info, err := env.Consumer.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 3 || info.NumAckPending != 0 {
		t.Errorf("the pipeline's consumer: %d pending, %d awaiting ack; want 3 and 0 (inspect must not consume)", info.NumPending, info.NumAckPending)
	}
}

// TestDeadLetterStream: inspect reads the dead-letter stream as it reads logs,
// printing each entry of its messages as a dead letter with the log message
// it came from (and the whole length of a cut record).
func TestDeadLetterStream(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang bound
	defer cancel()
	pub := sink.NewNATSPublisher(env.JS, nil, nil)
	subj := bus.LogSubject(schemas.FormatJSON, "gw-1")
	big := bytes.Repeat([]byte("y"), sink.MaxDeadLetterRecord+10)
	letters := []schemas.DeadLetter{
		{Line: 0, Reason: schemas.DeadLetterMalformedJSON, Detail: "expected '{' at the start of the line", Size: 1, Record: []byte("x")},
		{Line: 2, Reason: schemas.DeadLetterTooLarge, Detail: "too long", Size: len(big), Record: big},
		{Line: 5, Reason: schemas.DeadLetterMalformedJSON, Detail: "expected '{' at the start of the line", Size: 1, Record: []byte("z")},
	}
	if err := pub.DeadLetters(ctx, subj, 7, letters); err != nil {
		t.Fatal(err)
	}
	// A dead letter of the earlier shape (one record per message, the detail
	// in a header), as a stream written before the upgrade still holds.
	old := nats.NewMsg(schemas.SubjectDLQPrefix + ".bad_timestamp")
	old.Data = []byte("junk")
	old.Header.Set(schemas.HeaderDLQReason, schemas.DeadLetterBadTimestamp)
	old.Header.Set(schemas.HeaderDLQSubject, subj)
	old.Header.Set(schemas.HeaderDLQSequence, "3")
	old.Header.Set(schemas.HeaderDLQLine, "1")
	old.Header.Set(schemas.HeaderDLQDetailV1, "no time")
	if _, err := env.JS.PublishMsg(ctx, old); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p := &Printer{W: &out}
	if err := p.Subject(ctx, env.JS, SubjectOptions{Subject: schemas.SubjectDLQAll}); err != nil {
		t.Fatal(err)
	}
	got := lines(t, out.Bytes())
	if p.DeadLetters != 4 || len(got) != 4 {
		t.Fatalf("%d dead letters:\n%s", p.DeadLetters, out.Bytes())
	}
	want := []struct {
		reason, record string
		line           float64
	}{{schemas.DeadLetterMalformedJSON, "x", 0}, {schemas.DeadLetterMalformedJSON, "z", 5}, {schemas.DeadLetterTooLarge, string(big[:sink.MaxDeadLetterRecord]), 2}}
	for i, w := range want {
		dl, _ := got[i]["dead_letter"].(map[string]any)
		if dl["reason"] != w.reason || dl["record"] != w.record || dl["line"] != w.line || dl["seq"] != 7.0 || dl["subject"] != subj {
			t.Errorf("dead letter %d: %v; want reason %s line %v of message 7 on %s", i, got[i], w.reason, w.line, subj)
		}
		if dl["detail"] == "" {
			t.Errorf("dead letter %d has no detail: %v", i, got[i])
		}
	}
	if dl, _ := got[2]["dead_letter"].(map[string]any); dl["size"] != float64(len(big)) {
		t.Errorf("the cut record: %v; want its whole size %d", got[2], len(big))
	}
	if dl, _ := got[3]["dead_letter"].(map[string]any); dl["reason"] != schemas.DeadLetterBadTimestamp || dl["detail"] != "no time" ||
		dl["record"] != "junk" || dl["seq"] != 3.0 || dl["line"] != 1.0 {
		t.Errorf("the dead letter of the earlier shape: %v", got[3])
	}
}
