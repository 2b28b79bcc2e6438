// Package pipeline connects the stages of iotwatch in one process:
//
//	JetStream pull consumer ─▶ ingest (decode, dead-letter) ─▶ shard ─▶ workers (state + detectors + decide)
//	   ─▶ collector (columnar batch, alerts, decisions) ─▶ flusher (ClickHouse, NATS) ─▶ ack
//
// Stages are goroutines joined by bounded channels, so back-pressure flows
// upstream: a slow ClickHouse fills the flusher's queue, the collector blocks,
// workers block, the free list of in-flight events runs dry and fetching stops.
// Nothing is dropped.
//
// Memory is bounded by rows, not by the consumer's MaxAckPending: at most
// MaxInFlight decoded events, plus the collector's batch, one queued batch and
// ConcurrentInserts batches being inserted (FlushRows rows each), plus the
// messages those events came from.
//
// Ack contract: a log message is acked only after every row, alert and decision
// derived from it is durable. Ingest follows each fetched batch of messages with
// a barrier through every worker; when the collector has seen the barrier from
// all workers, every result of the batch is in the collector's buffer, and the
// batch's messages are acked after the next flush succeeds. Redelivery after a
// crash is harmless for storage: rows, alerts and decisions carry ids derived
// from the stream position (ReplacingMergeTree, JetStream duplicate window).
//
// One file per stage, in the order an event meets them:
//
//	pipeline.go    the Pipeline, New and Run (starting and draining the stages); the sinks' interfaces
//	config.go      Config and its defaults
//	ingest.go      fetch, decode, dispatch to shards, dead-letter (the decoders per subject)
//	work.go        the workers' goroutines: one per shard, scoring and sweeping its devices
//	collect.go     the collector: columnar batches, alerts, decisions, completed fetches
//	flush.go       the flusher: rows, decisions, alerts made durable, then acks; retries,
//	               the unacked bookkeeping and its in-progress keep-alive
//	checkpoint.go  restore at start, periodic and final checkpoints, catch-up after a crash
//	metrics.go     Metrics and the Prometheus text output
//
// The scoring stack the workers belong to (record layout, class table, block
// limiter, decision engines, GeoIP enrichment) is built by package score, from
// Config.ScoreConfig: replay, eval and the golden-scenario runner build theirs
// there too, so they score as the pipeline does.
package pipeline
