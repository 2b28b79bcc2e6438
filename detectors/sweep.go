package detectors

import "github.com/iotwatch/iotwatch/schemas"

// Sweeper is implemented by a detector that can judge a device that sends
// nothing. Observe only runs when an event arrives, so a device that stops
// would be reported only when it comes back; a worker sweeps its state
// records on event time instead (pipeline/worker, Worker.Sweep) and asks each
// Sweeper when every device becomes silent, then reports the silence at that
// time with a synthetic event that carries the device's last identity.
//
// Both methods are pure functions of state (the detector's slice of the
// device's record, as Observe gets it): they must not modify, retain or
// allocate, and they never read the wall clock, so a replay sweeps the same
// devices at the same times.
type Sweeper interface {
	// SilentAt returns the event time (Unix ns) at which the device becomes
	// silent if it sends nothing more: the earliest time at which Silence
	// reports a finding. ok is false when the detector would report no silence
	// at any time (no history, not warm, no baseline). The time only moves
	// when the device sends an event, so a sweep reports each silence once by
	// looking for the times that fall in its window.
	SilentAt(state []byte) (at int64, ok bool)
	// Silence returns the finding for the device's silence as of now (Unix
	// ns): the finding Observe would return for an event arriving at now after
	// that silence. It returns the zero Finding when the device is not silent
	// at now (now before SilentAt, or SilentAt not ok).
	Silence(state []byte, now int64) schemas.Finding
}
