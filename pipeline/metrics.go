package pipeline

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Metrics are the pipeline's counters, safe to read at any time.
type Metrics struct {
	Messages     atomic.Uint64 // log messages fetched
	Events       atomic.Uint64 // events decoded and scored
	DeadLettered atomic.Uint64 // lines sent to the DLQ
	Skipped      atomic.Uint64 // well-formed records that carry no event (broker keep-alives)
	ObsRejected  atomic.Uint64 // entity observation batches that could not be read
	Alerts       atomic.Uint64
	// Incidents: updates published, incidents opened, open now, closed
	// early because incident.Config.MaxOpen were open, merged into another
	// (by an alert that belongs to both), and ids retired (merged or
	// renamed: incident.Grouper.OnRetire); the collector's grouper.
	IncidentUpdates  atomic.Uint64
	IncidentsMerged  atomic.Uint64
	IncidentsRetired atomic.Uint64
	IncidentsOpened  atomic.Uint64
	IncidentsOpen    atomic.Int64
	IncidentsEvicted atomic.Uint64
	Decisions        atomic.Uint64
	Rows             atomic.Uint64 // scored rows written to ClickHouse
	Acked            atomic.Uint64 // messages whose acks the server confirmed
	AckErrors        atomic.Uint64 // flushes whose acks the server did not confirm
	FlushLatency     Histogram     // seconds from a flush's start to its acks (count: flushes)
	SinkErrors       atomic.Uint64 // failed sink attempts (each retried)
	InProgress       atomic.Uint64 // messages reported in progress while waiting for a slow sink
	Devices          atomic.Int64  // devices with state, all workers
	Evictions        atomic.Uint64 // live records evicted because MaxDevices was reached
	Expired          atomic.Uint64 // records reclaimed after IdleTTL
	// Entities are the entity records held (client IPs and prefixes, all
	// owners); EntityEvictions counts live ones evicted at the entity cap,
	// EntityExpired those reclaimed after their idle TTL.
	Entities                       atomic.Int64
	EntityEvictions, EntityExpired atomic.Uint64
	Relearned                      atomic.Uint64 // events at or before their record's position: scored for the row, not learned, no alert or decision
	CaughtUp                       atomic.Uint64 // events judged again at start, after the checkpoint's position
	// CatchUpStored counts the events a partition's catch-up judged again
	// whose rows its previous owner had stored: not written again
	// (written.go). CatchUpUnchecked counts those it judged again without
	// knowing (ClickHouse unreachable at the takeover): written again.
	// CatchUpDropped counts the alerts and decisions the judging again of
	// such stored events raised that the previous owner had not stored:
	// dropped (the previous owner's judgement stands; never invented).
	CatchUpStored, CatchUpUnchecked, CatchUpDropped atomic.Uint64
	// Replayed counts the events of a taken-over partition's messages no
	// previous owner judged, judged through the class gate (replay.go).
	Replayed atomic.Uint64
	// HandoverWaits counts the partitions acquired while their previous
	// owner was alive and had not released them: waited for
	// (Pipeline.RestorePartition); HandoverWaitsGivenUp, the waits that
	// reached handoverWait.
	HandoverWaits, HandoverWaitsGivenUp atomic.Uint64
	// RedeliveredDone counts redelivered messages acked without being
	// judged again: after a restart, those whose results were durable
	// already; in a run, those it had dispatched already (an ack lost or late).
	RedeliveredDone atomic.Uint64
	Silences        atomic.Uint64 // silent devices the workers' sweeps reported (worker.Sweep)
	Unnamed         atomic.Uint64 // silent devices a sweep could not name
	// Events stored but not judged as their device's behaviour (worker.Enforced).
	EnforcedDenied, EnforcedUnavailable, EnforcedActiveBlock atomic.Uint64
	LastEvent                                                atomic.Int64 // event time (Unix ns) of the latest scored event
	// ClassHolds counts the times the ingest loop held events back until
	// the merged class view covered them (ClassGate), ClassHoldNanos the
	// time it held, ClassHoldOverruns the holds given up at ClassHoldMax.
	ClassHolds, ClassHoldNanos, ClassHoldOverruns atomic.Uint64
	// CheckpointRereads counts the checkpoint objects got again after a
	// get that failed: the object was replaced while it was read, or the
	// get stalled (Pipeline.loadAgain).
	CheckpointRereads atomic.Uint64
}

// findingCounts counts findings per detector and reason (the collector adds,
// metrics read).
type findingCounts struct {
	mu sync.Mutex
	n  map[[2]string]uint64
}

func (c *findingCounts) add(sc *schemas.Scored) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[[2]string]uint64{}
	}
	for _, f := range sc.Findings[:sc.N] {
		c.n[[2]string{f.Detector, f.Reason}]++
	}
	c.mu.Unlock()
}

// each calls fn for every detector and reason counted, in name order.
func (c *findingCounts) each(fn func(detector, reason string, n uint64)) {
	c.mu.Lock()
	keys := slices.SortedFunc(maps.Keys(c.n), func(a, b [2]string) int {
		return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1]))
	})
	counts := make([]uint64, len(keys))
	for i, k := range keys {
		counts[i] = c.n[k]
	}
	c.mu.Unlock()
	for i, k := range keys {
		fn(k[0], k[1], counts[i])
	}
}

// WriteMetrics writes the pipeline's counters in the Prometheus text format.
func (p *Pipeline) WriteMetrics(w io.Writer) {
	m := &p.M
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %d\n", name, help, name, name, v)
	}
	counter(schemas.MetricMessagesFetched, "Log messages fetched from JetStream.", m.Messages.Load())
	counter(schemas.MetricEventsIngested, "Events decoded and scored.", m.Events.Load())
	counter(schemas.MetricDeadLettered, "Undecodable records sent to the dead-letter stream.", m.DeadLettered.Load())
	counter(schemas.MetricSkipped, "Well-formed records that carry no event (broker keep-alives, start-up lines).", m.Skipped.Load())
	counter(schemas.MetricObsRejected, "Entity observation batches of the ingest stage that could not be read (another layout version, a torn length): their observations are not judged.", m.ObsRejected.Load())
	counter(schemas.MetricAlerts, "Alerts published (stored in ClickHouse when it takes their rows).", m.Alerts.Load())
	counter(schemas.MetricIncidentUpdates, "Incident updates published (an incident is republished, with a higher version, as alerts join it).", m.IncidentUpdates.Load())
	counter(schemas.MetricIncidentsOpened, "Incidents opened by the collector's grouper.", m.IncidentsOpened.Load())
	gauge(schemas.MetricIncidentsOpen, "Incidents open (closed after their idle gap of event time).", m.IncidentsOpen.Load())
	counter(schemas.MetricIncidentsEvicted, "Incidents closed early because the cap on open incidents was reached.", m.IncidentsEvicted.Load())
	counter(schemas.MetricIncidentsRetired, "Incident ids retired: merged into another incident, or renamed after an earlier alert (merged_into set).", m.IncidentsRetired.Load())
	counter(schemas.MetricDecisions, "Decisions published (stored in ClickHouse when it takes their rows).", m.Decisions.Load())
	counter(schemas.MetricRowsWritten, "Scored rows written to ClickHouse.", m.Rows.Load())
	counter(schemas.MetricMessagesAcked, "Log messages acked after their results were durable, counted once the server confirmed the acks.", m.Acked.Load())
	counter(schemas.MetricAckErrors, "Flushes whose acks the server did not confirm (refused: the user lacks $JS.ACK permission; or unanswered); their messages are redelivered.", m.AckErrors.Load())
	counter(schemas.MetricPublishStalledSeconds, "Time publishing alerts and decisions has been failing (full NATS store, refused publishes), summed over stalls.", uint64(p.pubStall.total().Seconds()))
	counter(schemas.MetricSinkErrors, "Failed sink attempts (each retried), NATS and ClickHouse.", p.SinkErrors())
	counter(schemas.MetricFlushes, "Flushes of results to the sinks.", m.FlushLatency.Count())
	counter(schemas.MetricInProgress, "Messages reported in progress while waiting for a slow sink.", m.InProgress.Load())
	fmt.Fprintf(w, "# HELP %s Time spent flushing results.\n# TYPE %s counter\n%s %g\n",
		schemas.MetricFlushSeconds, schemas.MetricFlushSeconds, schemas.MetricFlushSeconds, m.FlushLatency.Sum())
	m.FlushLatency.write(w, schemas.MetricFlushDuration, "Time from the start of a flush (rows, alerts, decisions) to the acks of its messages.")
	gauge(schemas.MetricStateDevices, "Devices with a state record.", m.Devices.Load())
	counter(schemas.MetricStateEvictions, "Live device records evicted because the device cap was reached (their baselines are lost).", m.Evictions.Load())
	counter(schemas.MetricStateExpired, "Device records reclaimed after the idle TTL.", m.Expired.Load())
	gauge(schemas.MetricStateEntities, "Entity records (client IPs and their /24 or /48) held.", m.Entities.Load())
	counter(schemas.MetricStateEntityEvictions, "Live entity records evicted because the entity cap was reached (entities without a baseline go first).", m.EntityEvictions.Load())
	counter(schemas.MetricStateEntityExpired, "Entity records reclaimed after the idle TTL.", m.EntityExpired.Load())
	counter(schemas.MetricRedelivered, "Events at or before their record's learned position (redelivered): scored for their row, not learned twice, no alert or decision.", m.Relearned.Load())
	counter(schemas.MetricCaughtUp, "Events judged again at start, after the checkpoint's stream position (what a crash lost).", m.CaughtUp.Load())
	counter(schemas.MetricCatchUpStored, "Events a partition's catch-up judged again whose rows the previous owner had stored: not written again.", m.CatchUpStored.Load())
	counter(schemas.MetricCatchUpDropped, "Alerts and decisions a partition's catch-up raised for events the previous owner had stored with another alert (decision): dropped.", m.CatchUpDropped.Load())
	counter(schemas.MetricCatchUpUnchecked, "Events a partition's catch-up judged again without knowing whether the previous owner had stored them (ClickHouse unreachable): written again.", m.CatchUpUnchecked.Load())
	counter(schemas.MetricReplayed, "Events of a taken-over partition's messages that no previous owner judged, judged by its new owner through the class gate after its catch-up.", m.Replayed.Load())
	counter(schemas.MetricHandoverWaits, "Partitions acquired while their previous owner was alive and had not released them: waited for its release.", m.HandoverWaits.Load())
	counter(schemas.MetricHandoverWaitsGivenUp, "Waits for a partition's previous owner's release that reached their bound: its in-flight rows may be written twice.", m.HandoverWaitsGivenUp.Load())
	counter(schemas.MetricCheckpointRereads, "Checkpoint objects got again after a get that failed: replaced while it was read, or stalled.", m.CheckpointRereads.Load())
	counter(schemas.MetricRedeliveredDone, "Redelivered messages acked without being judged again: dispatched already in this run, or durable before a restart.", m.RedeliveredDone.Load())
	if p.gate != nil {
		counter(schemas.MetricClassHolds, "Times events were held back until the merged class view covered their event time.", m.ClassHolds.Load())
		fmt.Fprintf(w, "# HELP %s Seconds events were held back until the merged class view covered their event time.\n# TYPE %s counter\n%s %g\n",
			schemas.MetricClassHoldSeconds, schemas.MetricClassHoldSeconds, schemas.MetricClassHoldSeconds, float64(m.ClassHoldNanos.Load())/1e9)
		counter(schemas.MetricClassHoldOverruns, "Holds given up after their bound: events judged beyond what the merged class view covered.", m.ClassHoldOverruns.Load())
	}
	counter(schemas.MetricSilencesSwept, "Silent devices reported by the event-time sweep while silent (one row each, reason silence).", m.Silences.Load())
	counter(schemas.MetricSilencesUnnamed, "Silent devices the sweep could not report: their identity was not seen since the worker started.", m.Unnamed.Load())
	fmt.Fprintf(w, "# HELP %s Events stored but neither scored nor learned: the enforcement point's doing, not the device's.\n# TYPE %s counter\n", schemas.MetricEventsEnforced, schemas.MetricEventsEnforced)
	for _, c := range []struct {
		cause string
		n     uint64
	}{{schemas.VerdictDenied.String(), m.EnforcedDenied.Load()}, {schemas.VerdictUnavailable.String(), m.EnforcedUnavailable.Load()}, {"active_block", m.EnforcedActiveBlock.Load()}} {
		fmt.Fprintf(w, "%s{cause=%q} %d\n", schemas.MetricEventsEnforced, c.cause, c.n)
	}
	fmt.Fprintf(w, "# HELP %s Findings by detector and reason.\n# TYPE %s counter\n", schemas.MetricFindings, schemas.MetricFindings)
	p.findings.each(func(detector, reason string, n uint64) {
		fmt.Fprintf(w, "%s{detector=%q,reason=%q} %d\n", schemas.MetricFindings, detector, reason, n)
	})
	if lag, err := p.Lag(); err == nil {
		gauge(schemas.MetricConsumerLag, "Log messages not yet delivered or not yet acked (the consumer's pending plus ack-pending).", int64(lag))
	}
	counter(schemas.MetricBlocksCapped, "Blocks refused by the per-minute cap (alert only).", p.limiter.Denied())
	counter(schemas.MetricFreshBlocksCapped, "Blocks of fresh addresses (a botnet wave's) refused by their own per-minute cap, --max-fresh-blocks-per-minute (alert only).", p.stack.FreshLimiter.Denied())
	h := p.Health()
	gauge(schemas.MetricRowsWaiting, "Scored rows not yet durable in ClickHouse (their alerts and decisions are published already).", h.RowsWaiting)
	gauge(schemas.MetricWaitingBytes, "Memory held for ClickHouse: rows, alerts and decisions not yet durable there and the log messages whose acks wait for them.", h.BytesWaiting)
	gauge(schemas.MetricWaitingLimit, "The bound on the memory held for ClickHouse; at it, fetching (and deciding) pauses.", h.BytesLimit)
	fmt.Fprintf(w, "# HELP %s Age of the oldest rows not yet durable in ClickHouse (0: none).\n# TYPE %s gauge\n%s %g\n",
		schemas.MetricWaitingSeconds, schemas.MetricWaitingSeconds, schemas.MetricWaitingSeconds, h.OldestWaiting.Seconds())
	full := int64(0)
	if h.Full {
		full = 1
	}
	gauge(schemas.MetricWaitingFull, "1 while the memory held for ClickHouse is at its bound: fetching and deciding pause until rows are written.", full)
	gauge(schemas.MetricPublishWaiting, "Batches of alerts and decisions decided and not yet acknowledged by NATS.", int64(h.PublishWaiting))
}

// Health is what the pipeline's sinks owe it, for readiness probes and
// operators: decisions flow as long as NATS takes them and the buffer for
// ClickHouse has room, whether ClickHouse is up or not.
type Health struct {
	RowsWaiting   int64         // scored rows not yet durable in ClickHouse
	BytesWaiting  int64         // memory held for ClickHouse (rows, alerts, decisions, their messages)
	BytesLimit    int64         // Config.MaxWaitingBytes
	OldestWaiting time.Duration // how long the oldest of them has waited; 0 when none
	// Full: the bound is reached, so fetching pauses, and with it scoring and
	// deciding, until ClickHouse takes rows again.
	Full bool
	// PublishWaiting counts batches of alerts and decisions decided and not
	// yet acknowledged by NATS.
	PublishWaiting uint64
	// AckError is the error of the last flush whose acks the server did not
	// confirm, nil once a later flush is confirmed.
	AckError error
	// PublishStalled is how long publishing alerts and decisions has been
	// failing (0 when it is not), and PublishError the last failure.
	PublishStalled time.Duration
	PublishError   error
}

// PublishStalledAfter is how long publishing may fail before NotReady says so.
const PublishStalledAfter = 10 * time.Second

// NotReady returns why the pipeline is not doing its job, or "" when it is:
// acks the server does not confirm (its messages are redelivered forever),
// publishing stalled (a full NATS store: decisions wait, nothing is acked),
// or the memory held for ClickHouse at its bound (fetching paused).
func (h Health) NotReady() string {
	switch {
	case h.AckError != nil:
		return fmt.Sprintf("acks not confirmed by NATS (check the user's $JS.ACK permission): %v", h.AckError)
	case h.PublishStalled >= PublishStalledAfter:
		return fmt.Sprintf("publishing decisions and alerts has failed for %s (is the NATS store full?): %v", h.PublishStalled.Round(time.Second), h.PublishError)
	case h.Full:
		return "fetching and decisions paused: the memory held for ClickHouse is at its bound"
	}
	return ""
}

// StoreBehindAfter is how long rows may wait for ClickHouse before Health
// reports it behind: a healthy flush takes well under a second.
const StoreBehindAfter = 10 * time.Second

// StoreBehind reports whether rows have waited for ClickHouse longer than
// StoreBehindAfter: it is down or far too slow. Alerts and decisions still
// flow unless Full.
func (h Health) StoreBehind() bool { return h.OldestWaiting >= StoreBehindAfter }

// Health returns the state of the sinks as the pipeline sees it. It is safe
// to call at any time.
func (p *Pipeline) Health() Health {
	h := Health{BytesLimit: p.cfg.MaxWaitingBytes}
	var oldest time.Time
	h.RowsWaiting, h.BytesWaiting, oldest, h.Full = p.waiting.stats()
	if !oldest.IsZero() {
		h.OldestWaiting = time.Since(oldest)
	}
	if sent, done := p.pubSent.Load(), p.published.count(); sent > done {
		h.PublishWaiting = sent - done
	}
	if f := p.ackErr.Load(); f != nil {
		h.AckError = f.err
	}
	h.PublishStalled, h.PublishError = p.pubStall.current()
	return h
}

// latencyBuckets are the upper bounds (seconds) of Histogram's buckets.
var latencyBuckets = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Histogram counts observations in latencyBuckets, safe for concurrent use,
// without allocating.
type Histogram struct {
	buckets [len(latencyBuckets) + 1]atomic.Uint64 // the last is +Inf
	sumNs   atomic.Uint64                          // sum in nanoseconds
}

// Observe adds one observation of v seconds.
func (h *Histogram) Observe(v float64) {
	i := 0
	for i < len(latencyBuckets) && v > latencyBuckets[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.sumNs.Add(uint64(max(v, 0) * 1e9))
}

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// Sum returns the sum of the observations, in seconds.
func (h *Histogram) Sum() float64 { return float64(h.sumNs.Load()) / 1e9 }

// write writes h in the Prometheus text format (cumulative buckets).
func (h *Histogram) write(w io.Writer, name, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, le := range latencyBuckets {
		cum += h.buckets[i].Load()
		fmt.Fprintf(w, "%s_bucket{le=\"%g\"} %d\n", name, le, cum)
	}
	cum += h.buckets[len(latencyBuckets)].Load()
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %g\n%s_count %d\n", name, cum, name, h.Sum(), name, cum)
}

// retrier is implemented by sinks that retry internally (sink.ClickHouse).
type retrier interface{ Retries() uint64 }

// SinkErrors returns the failed sink attempts: the pipeline's own (NATS
// publishes, dead letters) and those the row writer retried internally.
func (p *Pipeline) SinkErrors() uint64 {
	n := p.M.SinkErrors.Load()
	if r, ok := p.rows.(retrier); ok {
		n += r.Retries()
	}
	return n
}

// Lag returns the log messages the pipeline has not finished: not yet
// delivered to it plus delivered but not yet acked. It asks the server.
func (p *Pipeline) Lag() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := p.cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("cannot read consumer lag: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}
