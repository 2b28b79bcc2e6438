package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/partition"
	"github.com/iotwatch/iotwatch/schemas"
)

// batch is one fetch's messages, acked together after their results are durable.
type batch struct {
	msgs []jetstream.Msg
	left int // workers whose barrier the collector has not seen yet
	// upTo is the latest event time dispatched up to this batch's end
	// (for a ClassGate).
	upTo int64
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
// decoded; the server heard of b when its first message came (time.Now is
// taken then only). Only ingest calls it.
func (u *unacked) addMsg(b *batch, m jetstream.Msg) {
	u.mu.Lock()
	if u.batches == nil {
		u.batches = map[*batch]time.Time{}
	}
	if _, ok := u.batches[b]; !ok {
		u.batches[b] = time.Now()
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

// flushJob is one flush of the collector: scored rows, the alerts and
// decisions to store with them, and the fetched batches whose every result is
// in this job or an earlier one.
type flushJob struct {
	rec       arrow.RecordBatch
	alerts    []schemas.Alert    // rows for ClickHouse (published already, see pubSeq)
	decisions []schemas.Decision // likewise
	incidents []schemas.Incident // likewise: the latest update of each incident since the last flush
	acks      []*batch
	// pubSeq is the number of publish jobs the collector had sent when it made
	// this job: the job's messages are acked only once the publisher has
	// published that many, so every alert and decision of its events is out.
	pubSeq uint64
	bytes  int64 // what the job holds in memory (rows, alerts, decisions, messages)
	start  time.Time
	// markers are answered once the job (and so every earlier one) is
	// durable and published, or has failed (see Pipeline.durable).
	markers []chan error
}

// jobBytes estimates what job holds in memory: its Arrow buffers, its alerts
// and decisions, and the data of the log messages it acks.
func jobBytes(job *flushJob) int64 {
	n := recordBytes(job.rec) + int64(len(job.alerts)+len(job.decisions)+len(job.incidents))*resultBytes
	for _, b := range job.acks {
		for _, m := range b.msgs {
			n += int64(len(m.Data())) + msgOverhead
		}
	}
	return n
}

// recordBytes returns the size of rec's buffers.
func recordBytes(rec arrow.RecordBatch) int64 {
	var n int64
	for _, col := range rec.Columns() {
		n += dataBytes(col.Data())
	}
	return n
}

func dataBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += dataBytes(c)
	}
	return n
}

const (
	resultBytes = 1024 // an alert or a decision, with its strings and reasons
	msgOverhead = 256  // a fetched message beyond its data (subject, reply, headers)
)

// waiting holds the flush jobs that are not durable yet, in order: queued for
// the flusher or being written. It is the buffer that lets decisions flow
// while ClickHouse is down, bounded by Config.MaxWaitingBytes: put blocks
// while the jobs held reach the bound (unless none is held, so that one job
// larger than the bound still goes through), and that is the back-pressure
// that eventually pauses fetching. Jobs are done in the order they were put.
type waiting struct {
	mu     sync.Mutex
	cond   sync.Cond
	jobs   []*flushJob // not done, oldest first; jobs[:next] are taken
	next   int
	bytes  int64
	rows   int64
	limit  int64
	full   bool // put is waiting for room
	closed bool
}

func newWaiting(limit int64) *waiting {
	w := &waiting{limit: limit}
	w.cond.L = &w.mu
	return w
}

// put appends job, waiting while the bound is reached.
func (w *waiting) put(job *flushJob) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.bytes > 0 && w.bytes+job.bytes > w.limit {
		w.full = true
		w.cond.Wait()
	}
	w.full = false
	w.jobs = append(w.jobs, job)
	w.bytes += job.bytes
	w.rows += job.rec.NumRows()
	w.cond.Broadcast()
}

// take returns the oldest job not taken yet, waiting for one; nil once closed
// and every job is taken.
func (w *waiting) take() *flushJob {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.next == len(w.jobs) && !w.closed {
		w.cond.Wait()
	}
	if w.next == len(w.jobs) {
		return nil
	}
	j := w.jobs[w.next]
	w.next++
	return j
}

// done releases the oldest job, which must be job.
func (w *waiting) done(job *flushJob) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.jobs) == 0 || w.jobs[0] != job || w.next == 0 {
		panic("BUG: flush jobs done out of order")
	}
	w.jobs[0] = nil
	w.jobs = w.jobs[1:]
	w.next--
	w.bytes -= job.bytes
	w.rows -= job.rec.NumRows()
	w.cond.Broadcast()
}

// close lets take return nil once every job is taken.
func (w *waiting) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
}

// stats returns the rows and bytes held, the start of the oldest job held
// (zero when none) and whether put is waiting for room.
func (w *waiting) stats() (rows, bytes int64, oldest time.Time, full bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.jobs) > 0 {
		oldest = w.jobs[0].start
	}
	return w.rows, w.bytes, oldest, w.full
}

// flusher makes each job durable in ClickHouse, then acks its messages once
// the publisher has published every alert and decision up to the job's
// pubSeq, in job order. Up to Config.ConcurrentInserts scored-row inserts run
// at once (ClickHouse spends most of an insert on its side, so two overlap
// well). It returns an error only if ctx ends before a job is durable and
// published (its messages stay unacked and JetStream redelivers them).
func (p *Pipeline) flusher(ctx context.Context) error {
	type inflight struct {
		job  *flushJob
		rows chan error
	}
	queue := make(chan *inflight, p.cfg.ConcurrentInserts-1)
	go func() {
		defer close(queue)
		for job := p.waiting.take(); job != nil; job = p.waiting.take() {
			f := &inflight{job: job, rows: make(chan error, 1)}
			queue <- f // first: the queue's bound is the bound on inserts in flight
			go func() {
				err := p.storeResults(ctx, job)
				if err == nil {
					err = p.writeRows(ctx, job.rec)
				}
				f.rows <- err
			}()
		}
	}()
	var failed error
	for f := range queue {
		err := <-f.rows
		job := f.job
		job.rec.Release()
		if failed == nil && err == nil {
			err = p.storeIncidents(ctx, job)
		}
		if failed == nil && err == nil {
			err = p.published.wait(ctx, job.pubSeq)
		}
		if failed == nil && err != nil {
			failed = err
			p.log.Error("cannot flush results; their messages stay unacked for redelivery", "err", err)
		}
		if failed == nil {
			p.ackJob(ctx, job)
			p.M.FlushLatency.Observe(time.Since(job.start).Seconds())
		}
		for _, m := range job.markers {
			if failed != nil {
				m <- failed
			} else {
				m <- nil
			}
		}
		p.waiting.done(job) // also after a failure: keep draining so the collector never blocks
	}
	return failed
}

// AckConfirmTimeout bounds the wait for the server to confirm a flush's acks.
const AckConfirmTimeout = 10 * time.Second

// ackJob acks job's messages and counts them acked only once the server has
// confirmed: every message but the last is acked without a reply, the last
// with one (DoubleAck). The server processes one connection's acks of a
// consumer in order, so its reply confirms the whole flush at the cost of one
// round trip per flush. An ack the server refuses (a user without $JS.ACK
// permission) is never answered: the flush counts as an ack error, Health
// reports it until a later flush is confirmed, and the messages are
// redelivered after the ack wait (scored again, not learned twice).
func (p *Pipeline) ackJob(ctx context.Context, job *flushJob) {
	if p.ackPerConsumer {
		p.ackPerPartition(ctx, job)
		return
	}
	var last jetstream.Msg
	sent := 0
	var failed error
	for _, b := range job.acks {
		for _, m := range b.msgs {
			if last != nil {
				if err := last.Ack(); err != nil && failed == nil {
					failed = err
				}
				sent++
			}
			last = m
		}
		p.unacked.remove(b)
	}
	if last == nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, AckConfirmTimeout)
	err := last.DoubleAck(cctx)
	cancel()
	p.acked(sent+1, errors.Join(failed, err))
}

// ackPerPartition is ackJob for a Source that merges several consumers (a
// scorer's partitions): the server orders the acks of one consumer, not
// across consumers, so the last message of each consumer is acked with a
// reply (one round trip per partition in the flush).
func (p *Pipeline) ackPerPartition(ctx context.Context, job *flushJob) {
	last := map[string]jetstream.Msg{}
	sent := 0
	var failed error
	for _, b := range job.acks {
		for _, m := range b.msgs {
			md, err := m.Metadata()
			if err != nil { // not a JetStream message: nothing to confirm it with
				continue
			}
			if prev := last[md.Consumer]; prev != nil {
				if err := prev.Ack(); err != nil && !errors.Is(err, partition.ErrFenced) && failed == nil {
					failed = err
				}
				sent++
			}
			last[md.Consumer] = m
		}
		p.unacked.remove(b)
	}
	if len(last) == 0 {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, AckConfirmTimeout)
	defer cancel()
	for _, m := range last {
		// A fenced message was given back to the partition's next owner
		// (partition.ErrFenced): not an ack failure of this instance.
		if err := m.DoubleAck(cctx); err != nil && !errors.Is(err, partition.ErrFenced) && failed == nil {
			failed = err
		}
		sent++
	}
	p.acked(sent, failed)
}

// acked counts a flush's n acks confirmed, or its failure (err).
func (p *Pipeline) acked(n int, err error) {
	if err == nil {
		p.M.Acked.Add(uint64(n))
		p.ackErr.Store(nil)
		return
	}
	p.M.AckErrors.Add(1)
	p.ackErr.Store(&ackFailure{err: err, at: time.Now()})
	p.log.Warn("the server did not confirm the acks of a flush; its messages will be redelivered", "messages", n, "err", err)
}

// ackFailure is the last unconfirmed flush's error, for Health.
type ackFailure struct {
	err error
	at  time.Time
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

// storeResults writes a job's alerts and decisions to ClickHouse, for
// analysts (they were published to NATS when they were decided), before the
// job's scored rows: an event whose row is stored has every alert and
// decision its judging raised stored too, which is what a partition's next
// owner relies on when it keeps the stored judgement of such an event
// (written.go). An owner killed between the two leaves alerts whose events
// have no row; the next owner judges those events again, writes their rows
// and finds the same alerts stored (not written again). Before, the rows
// came first, and an owner killed in between lost those alerts for good
// (lock-000006 in the 3-node cluster test, bench/RESULTS.md w1 and w3).
// Alerts come before the decisions taken on them: an owner killed between
// the two leaves an alert without its decision, not a decision whose
// reasons an analyst cannot find.
func (p *Pipeline) storeResults(ctx context.Context, job *flushJob) error {
	if len(job.alerts) > 0 {
		if err := p.rows.WriteAlerts(ctx, job.alerts); err != nil {
			return fmt.Errorf("cannot write %d alerts: %w", len(job.alerts), err)
		}
	}
	if len(job.decisions) > 0 {
		if err := p.rows.WriteDecisions(ctx, job.decisions); err != nil {
			return fmt.Errorf("cannot write %d decisions: %w", len(job.decisions), err)
		}
	}
	return nil
}

// storeIncidents writes a job's incident updates (published when the job
// was made), in job order, after its rows.
func (p *Pipeline) storeIncidents(ctx context.Context, job *flushJob) error {
	if len(job.incidents) > 0 {
		if err := p.rows.WriteIncidents(ctx, job.incidents); err != nil {
			return fmt.Errorf("cannot write %d incident updates: %w", len(job.incidents), err)
		}
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
