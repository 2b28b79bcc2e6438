package detectors

// StateBudget is the most bytes of per-device state that all registered
// detectors together may declare: the sum of their Spec.StateSize, which is
// the size of a device's record less the worker's 16-byte header. The
// conformance tests (detectors/conformance) fail when the registry exceeds it,
// and every other check of the record size reads it from here.
//
// It is 512 bytes. The four detectors of today take 296 (volume 100, geo 44,
// command 112, upload 40); the entity and locality detectors planned next
// (the device's API keys, client IP prefixes and ASNs as a few hashed keys
// with counts and last-seen times; its hours and days of activity as float32
// weights) need about 128 bytes each, which leaves room for one more of that
// size. A record
// of 512 + 16 bytes costs 0.53 GB per million devices in the state table's
// pointer-free slab, 5.3 GB at ten million: within a 24 GiB machine, and no
// work for the garbage collector. Raising it is a decision about memory per
// device, to be taken with bench/RESULTS.md in hand.
const StateBudget = 512
