// Package scaleout holds end-to-end tests of iotwatch on several instances
// (scaleout_test.go): an ingest stage and scorers sharing partitions through
// the real NATS server (embedded, at go.mod's version) into the real
// ClickHouse. The package has no code of its own: `go test
// ./tests/scaleout/` runs the tests; they need clickhouse-server (`make
// deps`).
package scaleout
