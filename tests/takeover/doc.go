// Package takeover holds the tests of a partition's new owner taking over
// from a scorer killed after it stored results past its last checkpoint
// (takeover_test.go): the new owner judges those events again to learn
// from them, without writing again what the killed owner stored, and
// writes what it did not store (the alerts and rows of a flush cut while
// its alerts were written). Each ends with the alert and decision ids of
// an undisturbed run of the same fleet, which the tests share.
//
// They were in package restart (tests/restart), whose other tests use the
// same rig (internal/pipetest.HandoverRig); apart, `go test ./...` runs the
// two packages side by side (each took about half of the one's time).
//
// The package has no code of its own; the tests need clickhouse-server
// (`make deps`):
//
//	go test -race -run 'TestTakeover' -v ./tests/takeover/
package takeover
