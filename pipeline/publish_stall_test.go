package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPublishStallReported: while publishing keeps failing (a full NATS store
// answers "insufficient resources", see sink.TestPublishDecisionsStoreFull),
// the round is retried, not dropped, Health reports the stall and NotReady
// says why after PublishStalledAfter; the first success ends the stall and
// its time stays in the total (iotwatch_publish_stalled_seconds_total).
func TestPublishStallReported(t *testing.T) {
	p := &Pipeline{log: slog.New(slog.DiscardHandler), waiting: newWaiting(1 << 20)}
	p.published.init()
	full := errors.New("nats: API error: code=503 err_code=10023 description=insufficient resources")
	var room atomic.Bool
	var attempts atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- p.retryPublish(context.Background(), "publish decisions", func(ctx context.Context) error {
			attempts.Add(1)
			if _, ok := ctx.Deadline(); !ok {
				t.Error("a publish attempt without a deadline can hang")
			}
			if room.Load() {
				return nil
			}
			return full
		})
	}()
	deadline := time.Now().Add(2 * time.Minute) // a hang bound
	for {
		h := p.Health()
		if strings.Contains(h.NotReady(), "insufficient resources") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stall not reported: %+v, attempts %d", h, attempts.Load())
		}
		time.Sleep(50 * time.Millisecond) // polling Health
	}
	if attempts.Load() < 2 {
		t.Errorf("%d attempts: the round is not retried", attempts.Load())
	}
	room.Store(true)
	if err := <-done; err != nil {
		t.Fatalf("retryPublish = %v once the store has room", err)
	}
	if h := p.Health(); h.PublishStalled != 0 || h.NotReady() != "" {
		t.Errorf("after success: %+v, not ready %q", h, h.NotReady())
	}
	if p.pubStall.total() < PublishStalledAfter {
		t.Errorf("stalled total %s, want at least %s", p.pubStall.total(), PublishStalledAfter)
	}
}
