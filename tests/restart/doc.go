// Package restart holds the pipeline's restart tests: a pipeline that
// crashes mid-stream (its inserts hang, its NATS connection drops) and is
// restarted from its checkpoint, in a file or in the JetStream Object Store
// with a save torn between its partitions (crash_test.go), a new owner
// taking over every partition through the hooks a partition owner calls
// (hooks_test.go), and scorers handing partitions over, after a clean stop
// or a crash (handover_test.go, on internal/pipetest.HandoverRig). Each
// ends with the alert and decision ids of an undisturbed control run, in
// ClickHouse and on NATS. The takeovers from a scorer killed after storing
// results past its checkpoint are in tests/takeover (run side by side).
//
// The package has no code of its own; the tests need clickhouse-server
// (`make deps`):
//
//	go test -race -run 'TestCrashRestart|TestPartitionHooks|TestHandover' -v ./tests/restart/
package restart
