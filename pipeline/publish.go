package pipeline

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// pubJob is what the collector hands the publisher: an alert or a decision as
// soon as a worker decided it, or the fleet alerts of a flush.
type pubJob struct {
	alerts    []schemas.Alert
	decisions []schemas.Decision
	incidents []schemas.Incident
}

// maxPubBatch bounds the publish jobs one publish round takes.
const maxPubBatch = 256

// publisher publishes alerts and decisions to NATS in the order the collector
// saw them, as soon as it hands them over, whatever ClickHouse is doing:
// enforcement must not wait for the analyst store. Jobs queued meanwhile are
// published together. Each round is retried until it is acknowledged or ctx
// ends; then the publisher records the failure (published.wait returns it, so
// no message is acked) and keeps draining its queue so the collector never
// blocks. A decision published again after a redelivery has the same id
// (JetStream deduplicates it; the KV value is rewritten with the same
// decision), so publishing before the rows are durable is harmless.
func (p *Pipeline) publisher(ctx context.Context) {
	var failed error
	var alerts []schemas.Alert
	var decisions []schemas.Decision
	var incidents []schemas.Incident
	for job := range p.pubs {
		n := uint64(1)
		alerts, decisions = append(alerts[:0], job.alerts...), append(decisions[:0], job.decisions...)
		incidents = append(incidents[:0], job.incidents...)
	more:
		for n < maxPubBatch {
			select {
			case j, ok := <-p.pubs:
				if !ok {
					break more
				}
				n++
				alerts, decisions = append(alerts, j.alerts...), append(decisions, j.decisions...)
				incidents = append(incidents, j.incidents...)
			default:
				break more
			}
		}
		if failed == nil {
			failed = p.publish(ctx, alerts, decisions, incidents)
			if failed != nil {
				p.log.Error("cannot publish alerts and decisions; their messages stay unacked for redelivery", "err", failed)
				p.published.fail(failed)
			}
		}
		if failed == nil {
			p.published.add(n)
		}
		clear(alerts)
		clear(decisions)
		clear(incidents)
	}
}

// publish sends decisions (first: enforcement points are waiting for them),
// then alerts, then incident updates, retrying each until the server
// acknowledged or ctx ends.
func (p *Pipeline) publish(ctx context.Context, alerts []schemas.Alert, decisions []schemas.Decision, incidents []schemas.Incident) error {
	if len(decisions) > 0 {
		if p.cfg.SigningKey != nil && !p.pubSigns {
			for i := range decisions {
				if err := schemas.SignDecision(&decisions[i], p.cfg.SigningKeyID, p.cfg.SigningKey); err != nil {
					return fmt.Errorf("cannot sign decision %q: %w", decisions[i].ID, err)
				}
			}
		}
		if err := p.retryPublish(ctx, "publish decisions", func(ctx context.Context) error { return p.pub.PublishDecisions(ctx, decisions) }); err != nil {
			return err
		}
		p.M.Decisions.Add(uint64(len(decisions)))
	}
	if len(alerts) > 0 {
		if err := p.retryPublish(ctx, "publish alerts", func(ctx context.Context) error { return p.pub.PublishAlerts(ctx, alerts) }); err != nil {
			return err
		}
		p.M.Alerts.Add(uint64(len(alerts)))
	}
	if len(incidents) > 0 {
		if err := p.retryPublish(ctx, "publish incidents", func(ctx context.Context) error { return p.pub.PublishIncidents(ctx, incidents) }); err != nil {
			return err
		}
		p.M.IncidentUpdates.Add(uint64(len(incidents)))
	}
	return nil
}

// pubProgress counts the publish jobs published, for the flusher to wait on.
type pubProgress struct {
	mu     sync.Mutex
	cond   sync.Cond
	n      uint64
	failed error
}

func (q *pubProgress) init() { q.cond.L = &q.mu }

func (q *pubProgress) add(n uint64) {
	q.mu.Lock()
	q.n += n
	q.cond.Broadcast()
	q.mu.Unlock()
}

func (q *pubProgress) fail(err error) {
	q.mu.Lock()
	q.failed = err
	q.cond.Broadcast()
	q.mu.Unlock()
}

// count returns the publish jobs published so far.
func (q *pubProgress) count() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// wait returns once n publish jobs are published, or the error that stopped
// the publisher. ctx ending also ends the wait: the publisher then fails too,
// as its retries run under the same context.
func (q *pubProgress) wait(ctx context.Context, n uint64) error {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n < n && q.failed == nil {
		if ctx.Err() != nil {
			return fmt.Errorf("cannot publish alerts and decisions: %w", ctx.Err())
		}
		q.cond.Wait()
	}
	if q.n >= n {
		return nil
	}
	return q.failed
}

// PublishTimeout bounds one attempt to publish a round of alerts and
// decisions: a server that does not answer (JetStream out of storage) fails
// the attempt, which is retried with back-off, instead of hanging.
const PublishTimeout = 5 * time.Second

// retryPublish is retry for the publisher: each attempt is bounded by
// PublishTimeout, and the time attempts keep failing is recorded (Health,
// metrics). Nothing is dropped: the round is retried, in order, until it is
// acknowledged or ctx ends; later rounds wait behind it, so decisions reach
// NATS in the order they were decided, and the messages behind them stay
// unacked (reported in progress, so not redelivered meanwhile).
func (p *Pipeline) retryPublish(ctx context.Context, what string, f func(context.Context) error) error {
	err := p.retry(ctx, what, func() error {
		actx, cancel := context.WithTimeout(ctx, PublishTimeout)
		defer cancel()
		err := f(actx)
		if err != nil {
			p.pubStall.fail(err)
		}
		return err
	})
	if err == nil {
		p.pubStall.ok()
	}
	return err
}

// pubStall measures how long publishing has been failing.
type pubStall struct {
	mu    sync.Mutex
	since time.Time // first failure of the current stall; zero when none
	last  error
	sum   time.Duration // ended stalls
}

func (s *pubStall) fail(err error) {
	s.mu.Lock()
	if s.since.IsZero() {
		s.since = time.Now()
	}
	s.last = err
	s.mu.Unlock()
}

func (s *pubStall) ok() {
	s.mu.Lock()
	if !s.since.IsZero() {
		s.sum += time.Since(s.since)
		s.since, s.last = time.Time{}, nil
	}
	s.mu.Unlock()
}

// current returns how long the current stall has lasted (0: none) and its last error.
func (s *pubStall) current() (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.since.IsZero() {
		return 0, nil
	}
	return time.Since(s.since), s.last
}

// total returns the time of every stall, the current one included.
func (s *pubStall) total() time.Duration {
	d, _ := s.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum + d
}
