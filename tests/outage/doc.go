// Package outage holds the pipeline's tests of an analyst store that stops
// taking rows (outage_test.go): decisions reach NATS while ClickHouse is down
// and every row arrives exactly once after it comes back, and what waits for
// ClickHouse is bounded, fetching pausing at the bound.
//
// The package has no code of its own; the tests need clickhouse-server
// (`make deps`):
//
//	go test -race -run 'TestDecisionsWithoutClickHouse|TestWaitingIsBounded' -v ./tests/outage/
package outage
