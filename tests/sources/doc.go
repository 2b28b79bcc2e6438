// Package sources holds the pipeline's tests of where its events come from
// (source_test.go): the same simulated fleet through `run` (decoding the logs
// itself) and through the ingest stage and a scorer of its Arrow batches
// (`run --source events`), with one consumer of every partition and as the
// sole owner of every partition, ends with the same rows, alerts, decisions
// and dead letters.
//
// The package has no code of its own; the tests need clickhouse-server
// (`make deps`):
//
//	go test -race -run TestEventsSourceMatchesLogs -v ./tests/sources/
package sources
