// Package shard assigns devices to workers.
//
// Invariant (one writer per device): every event of a device goes to the same
// worker, because the assignment is a pure function of the device key
// (schemas.Event.DeviceKey, a stable hash of tenant and device id) and of the
// number of workers, which is fixed for the life of a pipeline. The worker owns
// that device's state record; nothing else reads or writes it.
package shard

// Of returns the worker (in [0, n)) that owns the device with the given key.
// It uses the key's high bits (Lemire's multiply-shift), leaving the low bits,
// which the state table probes with, independent of the assignment.
func Of(deviceKey uint64, n int) int {
	return int(((deviceKey >> 32) * uint64(n)) >> 32)
}
