package schemas

// Metric names of the pipeline (Prometheus text format).
const (
	MetricEventsIngested  = "iotwatch_events_ingested_total"
	MetricMessagesFetched = "iotwatch_messages_fetched_total"
	MetricDeadLettered    = "iotwatch_dead_lettered_total"
	MetricAlerts          = "iotwatch_alerts_total"
	MetricDecisions       = "iotwatch_decisions_total"
	// Incidents (pipeline/incident): updates published, incidents opened,
	// open now, closed early at the cap on open incidents, and ids retired
	// (an incident merged into another, or renamed after an earlier alert).
	MetricIncidentsRetired = "iotwatch_incidents_retired_total"
	MetricIncidentUpdates  = "iotwatch_incident_updates_total"
	MetricIncidentsOpened  = "iotwatch_incidents_opened_total"
	MetricIncidentsOpen    = "iotwatch_incidents_open"
	MetricIncidentsEvicted = "iotwatch_incidents_evicted_total"
	MetricRowsWritten      = "iotwatch_clickhouse_rows_total"
	MetricFlushSeconds     = "iotwatch_flush_seconds_total"
	MetricFlushes          = "iotwatch_flushes_total"
	MetricFlushDuration    = "iotwatch_flush_duration_seconds" // histogram
	MetricMessagesAcked    = "iotwatch_messages_acked_total"
	MetricSinkErrors       = "iotwatch_sink_errors_total"
	// MetricAckErrors counts flushes whose acks the server did not confirm
	// (refused by permissions, or unanswered): their messages are redelivered.
	MetricAckErrors = "iotwatch_ack_errors_total"
	// MetricPublishStalledSeconds is the time publishing alerts and decisions
	// has failed (a full NATS store), summed over stalls.
	MetricPublishStalledSeconds = "iotwatch_publish_stalled_seconds_total"
	MetricBlocksCapped          = "iotwatch_blocks_capped_total"
	// MetricBudgetLocal counts the takes of a cluster-wide cap (label
	// budget) answered from the instance's local share because the KV
	// bucket could not be reached; MetricBudgetConflicts the revision
	// conflicts met counting it (another instance wrote first).
	MetricBudgetLocal     = "iotwatch_cluster_budget_local_total"
	MetricBudgetConflicts = "iotwatch_cluster_budget_conflicts_total"
	// MetricFreshBlocksCapped counts blocks of fresh addresses (a botnet
	// wave's) refused by their own per-minute cap (decide.FreshLimiter).
	MetricFreshBlocksCapped = "iotwatch_fresh_blocks_capped_total"
	MetricInProgress        = "iotwatch_messages_in_progress_total"
	MetricSkipped           = "iotwatch_records_skipped_total"
	MetricConsumerLag       = "iotwatch_consumer_lag_messages"
	MetricStateDevices      = "iotwatch_state_devices"
	MetricStateEvictions    = "iotwatch_state_live_evictions_total"
	// Entity records (client IPs and prefixes): held, live ones evicted at
	// the entity cap, and reclaimed after their idle TTL.
	MetricStateEntities        = "iotwatch_state_entities"
	MetricStateEntityEvictions = "iotwatch_state_entity_evictions_total"
	MetricStateEntityExpired   = "iotwatch_state_entity_expired_total"
	MetricStateExpired         = "iotwatch_state_expired_total"
	MetricRedelivered          = "iotwatch_events_redelivered_total" // scored for the row, not learned twice, no alert
	MetricCaughtUp             = "iotwatch_events_caught_up_total"   // judged again at start after a crash
	// MetricCatchUpStored and MetricCatchUpUnchecked count the events a
	// partition's catch-up judged again whose rows the previous owner had
	// stored (not written again), and those it could not check (written
	// again).
	MetricCatchUpStored    = "iotwatch_events_caught_up_stored_total"
	MetricCatchUpUnchecked = "iotwatch_events_caught_up_unchecked_total"
	// MetricReplayed counts the events of a taken-over partition's messages
	// that no previous owner judged, judged by its new owner through the
	// class gate (pipeline's replay) rather than in the catch-up.
	MetricReplayed = "iotwatch_events_replayed_total"
	// MetricCatchUpDropped counts the alerts and decisions a catch-up
	// raised again for stored events that the previous owner had not
	// stored: dropped, never invented.
	MetricCatchUpDropped = "iotwatch_caught_up_results_dropped_total"
	// MetricHandoverWaits counts the partitions a new owner acquired while
	// their previous owner was alive and had not released them (its last
	// save not its release): the new owner waited for that release before
	// reading what is stored; MetricHandoverWaitsGivenUp, the waits that
	// reached their bound (the previous owner's in-flight rows may then be
	// written by both).
	MetricHandoverWaits        = "iotwatch_partition_handover_waits_total"
	MetricHandoverWaitsGivenUp = "iotwatch_partition_handover_waits_given_up_total"
	// MetricCheckpointRereads counts the checkpoint objects a restore got
	// again after a get that failed: the object was replaced while it was
	// read (a put purges the chunks a get streams), or the get stalled.
	MetricCheckpointRereads = "iotwatch_checkpoint_reads_retried_total"
	// MetricRedeliveredDone counts redelivered messages acked without being
	// judged again: dispatched already in this run, or durable before a restart.
	MetricRedeliveredDone = "iotwatch_messages_redelivered_done_total"
	MetricFindings        = "iotwatch_findings_total" // labels detector, reason
	// MetricEventsEnforced counts events stored but not judged as their
	// device's behaviour, label cause: denied (the enforcement point refused
	// them for an iotwatch decision), enforcer_unavailable (the gateway's auth
	// check failed), active_block (no verdict in the log, the device's block
	// was active).
	MetricEventsEnforced = "iotwatch_events_enforced_total"
)

// Metric names of what waits for the sinks: alerts and decisions are published
// as soon as they are decided; rows wait for ClickHouse in a bounded buffer.
const (
	MetricRowsWaiting    = "iotwatch_clickhouse_rows_waiting"        // gauge: scored rows not yet durable in ClickHouse
	MetricWaitingBytes   = "iotwatch_clickhouse_waiting_bytes"       // gauge: memory held for ClickHouse (rows, results, their messages)
	MetricWaitingLimit   = "iotwatch_clickhouse_waiting_bytes_limit" // gauge: the bound on it (run --max-waiting-bytes)
	MetricWaitingSeconds = "iotwatch_clickhouse_waiting_seconds"     // gauge: age of the oldest rows waiting (0: none)
	MetricWaitingFull    = "iotwatch_clickhouse_waiting_full"        // gauge: 1 while the bound pauses fetching (and deciding)
	MetricPublishWaiting = "iotwatch_publish_waiting"                // gauge: alert and decision batches decided, not yet acknowledged by NATS
)

// Metric names of the silence sweep (pipeline/worker, Worker.Sweep).
const (
	MetricSilencesSwept   = "iotwatch_silences_swept_total"   // silent devices the sweep reported while silent
	MetricSilencesUnnamed = "iotwatch_silences_unnamed_total" // silent devices the sweep could not name (identity not seen since start)
)

// Metric names of the enforcement point (`iotwatch enforce`).
const (
	MetricEnforceChecks   = "iotwatch_enforce_checks_total" // label verdict=allow|block|throttle
	MetricEnforceActive   = "iotwatch_enforce_active_decisions"
	MetricEnforceApplied  = "iotwatch_enforce_applied_total"
	MetricEnforceRemoved  = "iotwatch_enforce_removed_total"
	MetricEnforceRejected = "iotwatch_enforce_rejected_total" // label reason=unsigned|malformed|unknown_key|bad_signature|invalid
	MetricEnforceResyncs  = "iotwatch_enforce_resyncs_total"
	MetricEnforceReceipts = "iotwatch_enforce_receipts_total" // label result=published|error|dropped
	// MetricReceiptsVerified counts the apply receipts the pipeline read,
	// label verification (a Receipt* verification status: verified,
	// unverified, or why it was rejected).
	MetricReceiptsVerified = "iotwatch_receipts_total"
	// MetricEnforceIgnoredDeletes counts KV deletes and purges of an enforced
	// decision that an enforcement point requiring signatures did not act on.
	MetricEnforceIgnoredDeletes = "iotwatch_enforce_ignored_deletes_total"
)

// Metric names of `iotwatch enforce mosquitto`'s broker connection.
const (
	MetricMosquittoConnected   = "iotwatch_enforce_mosquitto_connected"         // 1 while the dynamic-security connection is up
	MetricMosquittoDisconnects = "iotwatch_enforce_mosquitto_disconnects_total" // connections lost after they were up
	MetricMosquittoCommands    = "iotwatch_enforce_mosquitto_commands_total"    // label result=disabled|enabled|refused|failed
)

// Metric names of partition ownership ('run --source events', package
// pipeline/partition).
const (
	// MetricPartitionsOwned is the number of event partitions this instance
	// owns (the server pinned them to it).
	MetricPartitionsOwned = "iotwatch_partitions_owned"
	// MetricPartitionChanges counts partitions acquired and lost by this
	// instance (label change=acquired|lost).
	MetricPartitionChanges = "iotwatch_partition_ownership_changes_total"
	// MetricPartitionFenced counts the partitions this instance fenced
	// itself off (its lease on the pin ended: it stalled) and the messages
	// it gave back instead of handing them on or acking them (label
	// what=partitions|messages).
	MetricPartitionFenced = "iotwatch_partition_fenced_total"
	// MetricPartitionPending is each partition's messages not yet delivered
	// to any scorer (label partition), read from its consumer.
	MetricPartitionPending = "iotwatch_partition_pending_messages"
)

// Metric names of the class statistics merged across scorer instances
// ('run --source events', package pipeline/cluster, ClassSync).
const (
	// MetricClassContributionAge is the age in seconds, at the last merge,
	// of each other instance's contribution merged (label instance): how
	// stale what this instance knows of the others' devices is.
	MetricClassContributionAge = "iotwatch_class_contribution_age_seconds"
	// MetricClassMergeSeconds is how long the last merge took (fetch,
	// decode, merge, swap), off the hot path.
	MetricClassMergeSeconds = "iotwatch_class_merge_seconds"
	// MetricClassPublishBytes is the size of this instance's last
	// contribution put, compressed.
	MetricClassPublishBytes = "iotwatch_class_contribution_bytes"
	// MetricClassMerged is how many other instances' contributions the last
	// merge held, and MetricClassSyncFailures the rounds that failed.
	MetricClassMerged       = "iotwatch_class_contributions_merged"
	MetricClassSyncFailures = "iotwatch_class_sync_failures_total"
	// MetricClassWatermark is the event time (Unix seconds) this instance
	// last published as learned, and MetricClassLimit the event time up
	// to which it judges events at once: the merged class view's coverage
	// plus the lag (pipeline/cluster.ClassSync).
	MetricClassWatermark = "iotwatch_class_watermark_seconds"
	MetricClassLimit     = "iotwatch_class_limit_seconds"
	// MetricClassStalls counts the times a partition's coverage stayed
	// unchanged for the stall bound while it held events back, and was
	// ignored from then on until it changed (a dead owner not yet
	// replaced, a partition no instance owns).
	MetricClassStalls = "iotwatch_class_watermark_stalls_total"
	// MetricClassHolds counts the times the pipeline held events back
	// until the merged class view covered them, MetricClassHoldSeconds the
	// time it held, and MetricClassHoldOverruns the holds it gave up after
	// its bound (events judged beyond what the view covered).
	MetricClassHolds        = "iotwatch_class_holds_total"
	MetricClassHoldSeconds  = "iotwatch_class_hold_seconds_total"
	MetricClassHoldOverruns = "iotwatch_class_hold_overruns_total"
)

// MetricObsRejected counts entity observation batches (schemas.ObsSubject)
// a scorer could not read (another layout version, a torn length).
const MetricObsRejected = "iotwatch_entity_obs_batches_rejected_total"
