package pipeline_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestSilenceIsSweptWhileSilent: a meter reporting every minute stops after
// two hours while another goes on for four (one worker, so that its event
// clock runs on). The live pipeline stores one extra scored row: the meter's
// silence, 30 minutes (volume's MinSilence) after its last event, under its
// name and API key, without a command; the metric counts it; every message is
// acked although no message carries that row.
func TestSilenceIsSweptWhileSilent(t *testing.T) {
	e := setup(t, "sweep")
	ctx := context.Background()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	var lines []string
	events := 0
	for at := time.Duration(0); at < 4*time.Hour; at += time.Minute {
		for _, device := range []string{"meter-a", "meter-b"} {
			if device == "meter-a" && at >= 2*time.Hour {
				continue
			}
			lines = append(lines, line(device, at, ""))
			events++
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

	if n := e.count(t, schemas.TableScored); n != uint64(events)+1 {
		t.Errorf("%d scored rows for %d events, want one more: the silence", n, events)
	}
	q := fmt.Sprintf("SELECT %s, %s, %s, %s FROM %s.%s FINAL WHERE has(%s, '%s')", schemas.ColDevice, schemas.ColAPIKey,
		schemas.ColCommand, schemas.ColTimeMs, e.db, schemas.TableScored, schemas.ColReasons, volume.ReasonSilence)
	rows, err := e.conn.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	found := 0
	wantMs := base.Add(2*time.Hour - time.Minute).Add(time.Duration(volume.MinSilence) * time.Second).UnixMilli()
	for rows.Next() {
		var device, key, command string
		var ms int64
		if err := rows.Scan(&device, &key, &command, &ms); err != nil {
			t.Fatal(err)
		}
		found++
		if device != "meter-a" || key != "key-meter-a" || command != "" || ms != wantMs {
			t.Errorf("silence row %s %s %q at %d ms, want meter-a key-meter-a without command at %d ms", device, key, command, ms, wantMs)
		}
	}
	if found != 1 {
		t.Errorf("%d silence rows, want 1", found)
	}
	if got := p.M.Silences.Load(); got != 1 {
		t.Errorf("silences metric = %d, want 1", got)
	}
}
