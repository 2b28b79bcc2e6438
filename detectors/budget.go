package detectors

// StateBudget is the most bytes of per-device state that all registered
// detectors together may declare: the sum of their Spec.StateSize, which is
// the size of a device's record less the worker's 16-byte header. The
// conformance tests (detectors/conformance) fail when the registry exceeds it,
// and every other check of the record size reads it from here.
//
// It is 512 bytes. The seven detectors of today take 425 (abuse 24: request,
// 4xx, authentication-failure and known-bad counts in two 5-minute buckets
// and the current minute's requests; volume 104, geo 45 (1 of them the away flag),
// command 120 (8 of them its home network, for rollouts), upload 40, locality 80: client IP prefixes as four network
// keys with weights and ASN hashes; timeofday 12: a device's first event time
// and event count, since the hours of each command are its class's, in its
// class statistics); the entity detector planned next (the device's API keys
// as a few hashed keys with counts and last-seen times) was sized at about
// 128 bytes, which with abuse's 24 no longer fits (540): it must make do with
// 100, or the budget be raised. A record
// of 512 + 24 bytes costs 0.54 GB per million devices in the state table's
// pointer-free slab, 5.4 GB at ten million: within a 24 GiB machine, and no
// work for the garbage collector. Raising it is a decision about memory per
// device, to be taken with bench/RESULTS.md in hand.
const StateBudget = 512
