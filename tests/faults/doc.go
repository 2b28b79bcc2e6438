// Package faults holds iotwatch's fault tests (faults_test.go): the pipeline
// against the real NATS and ClickHouse servers while one of them stops or
// restarts, while the input exceeds its capacity, and while the pipeline
// process itself is killed with SIGKILL. Each test asserts that every event
// ends up exactly once in ClickHouse and logs the numbers bench/RESULTS.md
// reports (events sent, rows, duplicates, recovery time, largest heap).
//
// The package has no code of its own: `go test ./tests/faults/` runs the tests;
// they need clickhouse-server (`make deps`) and the Go toolchain (the kill test
// builds cmd/iotwatch).
package faults
