package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// batch is one fetch's messages, acked together after their results are durable.
type batch struct {
	msgs []jetstream.Msg
	left int // workers whose barrier the collector has not seen yet
}

// unacked tracks fetched batches until they are acked, with the last time the
// server heard of them (fetch, or an in-progress notice).
type unacked struct {
	mu      sync.Mutex
	batches map[*batch]time.Time
}

func (u *unacked) remove(b *batch) {
	u.mu.Lock()
	delete(u.batches, b)
	u.mu.Unlock()
}

// addMsg appends a fetched message to b as soon as it is received, registering
// b on its first message, so that it is kept alive while it waits to be
// decoded. Only ingest calls it.
func (u *unacked) addMsg(b *batch, m jetstream.Msg, now time.Time) {
	u.mu.Lock()
	if u.batches == nil {
		u.batches = map[*batch]time.Time{}
	}
	if _, ok := u.batches[b]; !ok {
		u.batches[b] = now
	}
	b.msgs = append(b.msgs, m)
	u.mu.Unlock()
}

// setMsgs replaces b's messages with those to ack (a new slice: stale may be
// copying the old one).
func (u *unacked) setMsgs(b *batch, msgs []jetstream.Msg) {
	u.mu.Lock()
	b.msgs = msgs
	u.mu.Unlock()
}

// stale returns the messages of the batches not heard of for at least age
// (copied: ingest may still be appending), marking those batches heard of now.
func (u *unacked) stale(now time.Time, age time.Duration) []jetstream.Msg {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []jetstream.Msg
	for b, t := range u.batches {
		if now.Sub(t) >= age {
			out = append(out, b.msgs...)
			u.batches[b] = now
		}
	}
	return out
}

// keepAlive tells the server that messages waiting for a slow sink are still
// being worked on, every quarter of the ack wait, until ctx is done.
func (p *Pipeline) keepAlive(ctx context.Context) {
	t := time.NewTicker(p.cfg.AckWait / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, m := range p.unacked.stale(now, p.cfg.AckWait/2) {
				if m.InProgress() == nil { // an already-acked message says so: fine
					p.M.InProgress.Add(1)
				}
			}
		}
	}
}

type flushJob struct {
	rec       arrow.RecordBatch
	alerts    []schemas.Alert
	decisions []schemas.Decision
	acks      []*batch
}

// flusher makes each job durable, then acks its messages, in job order. Up to
// Config.ConcurrentInserts scored-row inserts run at once (ClickHouse spends
// most of an insert on its side, so two overlap well); decisions, alerts and
// acks follow in order, one job at a time, so enforcement points see decisions
// in the order they were made. It returns an error only if ctx ends before a
// job is durable (its messages stay unacked and JetStream redelivers them).
func (p *Pipeline) flusher(ctx context.Context) error {
	type inflight struct {
		job   flushJob
		rows  chan error
		start time.Time
	}
	queue := make(chan *inflight, p.cfg.ConcurrentInserts-1)
	go func() {
		defer close(queue)
		for job := range p.jobs {
			f := &inflight{job: job, rows: make(chan error, 1), start: time.Now()}
			queue <- f // first: the queue's bound is the bound on inserts in flight
			go func() { f.rows <- p.writeRows(ctx, job.rec) }()
		}
	}()
	var failed error
	for f := range queue {
		err := <-f.rows
		f.job.rec.Release()
		if failed != nil {
			continue // keep draining so the collector never blocks
		}
		if err == nil {
			err = p.publish(ctx, f.job)
		}
		if err != nil {
			failed = err
			p.log.Error("cannot flush results; their messages stay unacked for redelivery", "err", err)
			continue
		}
		acked := 0
		for _, b := range f.job.acks {
			for _, m := range b.msgs {
				if err := m.Ack(); err != nil {
					p.log.Warn("cannot ack message; it will be redelivered", "err", err)
					continue
				}
				acked++
			}
			p.unacked.remove(b)
		}
		p.M.Acked.Add(uint64(acked))
		p.M.FlushLatency.Observe(time.Since(f.start).Seconds())
	}
	return failed
}

func (p *Pipeline) writeRows(ctx context.Context, rec arrow.RecordBatch) error {
	n := rec.NumRows()
	if n == 0 {
		return nil
	}
	if err := p.rows.WriteScored(ctx, rec); err != nil {
		return fmt.Errorf("cannot write %d scored rows: %w", n, err)
	}
	p.M.Rows.Add(uint64(n))
	return nil
}

// publish makes a job's decisions and alerts durable: NATS, then ClickHouse.
func (p *Pipeline) publish(ctx context.Context, job flushJob) error {
	// Decisions first: enforcement points are waiting for them.
	if len(job.decisions) > 0 {
		if p.cfg.SigningKey != nil {
			for i := range job.decisions {
				if err := schemas.SignDecision(&job.decisions[i], p.cfg.SigningKeyID, p.cfg.SigningKey); err != nil {
					return fmt.Errorf("cannot sign decision %q: %w", job.decisions[i].ID, err)
				}
			}
		}
		if err := p.retry(ctx, "publish decisions", func() error { return p.pub.PublishDecisions(ctx, job.decisions) }); err != nil {
			return err
		}
		if err := p.rows.WriteDecisions(ctx, job.decisions); err != nil {
			return fmt.Errorf("cannot write %d decisions: %w", len(job.decisions), err)
		}
		p.M.Decisions.Add(uint64(len(job.decisions)))
	}
	if len(job.alerts) > 0 {
		if err := p.retry(ctx, "publish alerts", func() error { return p.pub.PublishAlerts(ctx, job.alerts) }); err != nil {
			return err
		}
		if err := p.rows.WriteAlerts(ctx, job.alerts); err != nil {
			return fmt.Errorf("cannot write %d alerts: %w", len(job.alerts), err)
		}
		p.M.Alerts.Add(uint64(len(job.alerts)))
	}
	return nil
}

// retry calls f until it succeeds or ctx is done.
func (p *Pipeline) retry(ctx context.Context, what string, f func() error) error {
	for attempt := 0; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		p.M.SinkErrors.Add(1)
		if attempt%10 == 0 {
			p.log.Warn("sink call failed, retrying", "what", what, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot %s: %w", what, errors.Join(err, ctx.Err()))
		case <-time.After(backoff(attempt)):
		}
	}
}

// backoff is the wait before retry attempt (0-based) of a sink call.
func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 8)
	return min(d, 5*time.Second)
}
