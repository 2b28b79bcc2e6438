// Package schemas defines what flows through iotwatch: the normalized Event, its
// canonical JSON encoding, its Arrow form (eventarrow.go: EventArrowSchema,
// documented field by field and versioned, the wire format between the
// ingest stage and the scorers, with EventBatch to write it and EventReader
// to read it) and the device partitions it travels in (partition.go:
// PartitionOf), the scored result, alerts and decisions, and every
// pipeline-wide user-facing name, one file per topic: NATS streams, subjects,
// consumers, KV buckets and headers (names_nats.go), ClickHouse tables
// (names_clickhouse.go; columns in columns.go), metrics (names_metrics.go),
// severities, actions, scopes and the pipeline's own reasons
// (names_decisions.go), log formats (names_formats.go) and the enforcement
// point's HTTP headers (names_http.go). Detector and reason names are declared
// in each detector's own package (volume.Name, volume.ReasonRateSpike) and
// registered with detectors.Register.
//
// Names are part of the product: they end up in dashboards, queries and gateway
// configs. Renaming one is a migration; add a new name and version it instead.
package schemas

// SchemaVersion is the version of the canonical event encoding and of the
// ClickHouse tables this build writes. It is bumped on any incompatible change.
const SchemaVersion = 1
