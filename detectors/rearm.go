package detectors

// Rearmer is a detector whose short-term evidence an enforced block has
// dealt with. A block stops a device's offence at the enforcement point; when
// it lifts, the worker rearms the device's detectors once, on the device's
// first event at or after the block's expiry (event time) and before that
// event is observed, so that the device starts its short-term windows afresh
// from its baseline.
//
// Without it, a block shorter than a detector's short window would renew
// itself on the first legitimate request after it lifts: the window still
// holds the offence the block was for (and the requests that got through
// between the decision and its enforcement). With it, an offender that
// resumes is judged on what it does after the lift, which a flood makes
// evident again within a few requests; escalation (doubled TTLs for repeat
// offenders) is the decision engine's and is unaffected. This is the
// leaky-bucket convention of signature engines: a bucket that overflowed
// into a ban starts empty.
//
// Rearm must touch only short-term evidence (windows of seconds to minutes),
// never the long-term baseline, and must not allocate. state is the
// detector's slice of the device's record, as for Observe; all zeros (no
// history) must stay a valid state.
type Rearmer interface {
	Rearm(state []byte)
}
