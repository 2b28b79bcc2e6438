// Package pipeline connects the stages of iotwatch in one process:
//
//	JetStream pull consumer ─▶ ingest (decode, dead-letter) ─┬▶ shard ─▶ workers (state + detectors + decide)
//	                                                        └▶ entity owners (client IP and prefix + decide)
//	   ─▶ collector ─┬─▶ publisher (alerts, decisions: NATS, at once) ──────────────┐
//	                 └─▶ waiting rows (bounded) ─▶ flusher (ClickHouse) ─▶ both done ─┴▶ ack
//
// Stages are goroutines joined by bounded channels, so back-pressure flows
// upstream. Nothing is dropped.
//
// Enforcement does not wait for the analyst store. The collector hands every
// alert and decision to the publisher the moment a worker decides it, and the
// publisher sends it to NATS (decisions stream, KV bucket of active blocks,
// alerts stream) whatever ClickHouse is doing. Rows (scored events, and the
// alerts and decisions again, for analysts) go to the flusher through a
// buffer bounded in bytes (Config.MaxWaitingBytes, default 256 MiB: rows,
// alerts, decisions and the log messages whose acks wait for them). While
// ClickHouse is down or slow the pipeline keeps fetching, scoring, deciding
// and publishing until that bound is reached; then the collector blocks,
// workers block, the free list of in-flight events runs dry and fetching
// pauses (and deciding with it) until ClickHouse takes rows again. The
// consumer's MaxAckPending is a second bound: the server delivers no more
// messages once that many wait for their ack. Health and the metrics
// iotwatch_clickhouse_rows_waiting, _waiting_bytes, _waiting_seconds and
// _waiting_full say how much waits, for how long, and whether the bound is
// reached.
//
// Memory is thus bounded by MaxWaitingBytes, plus at most MaxInFlight decoded
// events in the channels, the collector's batch (FlushRows rows) and the
// messages being decoded.
//
// Ack contract: a log message is acked once its alerts and decisions (and
// the updates of the incidents its alerts joined) are published and its rows
// are durable. Ingest follows each fetched batch of
// messages with a barrier through every worker; when the collector has seen
// the barrier from all workers and all entity owners (package entity: ingest
// sends each event's entity observation, by value, to the owner of its
// client IP and prefix), every result of the batch is published or
// queued for the publisher and is in the collector's buffer, and the batch's
// messages are acked after the next flush is durable in ClickHouse and the
// publisher has published everything queued before it. A flush's acks count
// (Metrics.Acked) only once the server confirmed them (the last one is a
// DoubleAck); unconfirmed ones count in Metrics.AckErrors and make
// Health.NotReady say so. A publish attempt is bounded by PublishTimeout and
// retried, in order, while Health reports the stall. Unacked messages are
// reported in progress every quarter of the ack wait (keepAlive), so an
// outage does not get them redelivered, which would count them twice in the
// baselines. Redelivery after a crash is harmless: rows, alerts and decisions
// carry ids derived from the stream position (ReplacingMergeTree collapses
// rows; JetStream's duplicate window drops a republished decision, and its KV
// value is rewritten with the same decision), and device records know the
// stream position they learned up to, so nothing is learned twice. A
// message this run has dispatched already is not judged again when it is
// redelivered (an ack lost with a killed stream leader; seen.go), and an
// event that reaches a worker at or before its record's position gets no
// alert or decision (worker.Process): redelivery never invents alerts.
//
// One file per stage, in the order an event meets them:
//
//	pipeline.go    the Pipeline, New and Run (starting and draining the stages); the sinks' interfaces;
//	               Source, what it fetches from: a durable consumer, or the event partitions
//	               this scorer owns (package partition, merged in stream order)
//	config.go      Config and its defaults
//	ingest.go      fetch, decode, dispatch to shards, dead-letter (with package ingest's Decoder,
//	               which 'iotwatch ingest' shares: log messages, or the Arrow event batches
//	               of IOTWATCH_EVENTS with 'run --source events'); each event's entity
//	               observations to the entity owners
//	work.go        the workers' goroutines: one per shard, scoring and sweeping its devices;
//	               the entity owners' goroutines: one per entity shard, judging its entities
//	collect.go     the collector: alerts and decisions to the publisher at once; columnar
//	               batches of rows and completed fetches to the flusher; the one writer
//	               of the incident grouper (package incident), which every alert joins,
//	               devices' and entities' alike; its latest updates (and the ids it
//	               retires when incidents merge) go to the publisher at each flush and
//	               are stored with the flush; the grouper's open incidents travel in
//	               the checkpoint (taken at its durability marker), so alerts after a
//	               restart join the incidents opened before it
//	publish.go     the publisher: alerts and decisions to NATS as soon as they are decided
//	flush.go       the flusher: rows, alerts and decisions made durable in ClickHouse
//	               through the bounded waiting buffer, then acks; the unacked
//	               bookkeeping and its in-progress keep-alive
//	checkpoint.go  restore at start, periodic and final checkpoints, catch-up after a crash
//	store.go       the checkpoint in the JetStream Object Store (run --checkpoint nats:): one
//	               object per device partition, per entity partition and one global,
//	               each caught up from its own position; the partition owner's hooks
//	               SavePartition, RestorePartition and DropPartition
//	handover.go    Handover, the partition.Owner that calls them: a partition's state
//	               travels with its ownership (restore and catch up on Acquired, save
//	               and drop on Lost)
//	metrics.go     Metrics, Health and the Prometheus text output
//
// The scoring stack the workers belong to (record layout, class table, block
// limiter, decision engines, GeoIP enrichment) is built by package score, from
// Config.ScoreConfig: replay, eval and the golden-scenario runner build theirs
// there too, so they score as the pipeline does.
package pipeline
