package volume

import (
	"math/bits"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// A backend incident (a fleet-wide 503 storm) makes every device of a class
// fail at once, and each of them, judged against its own baseline, shows an
// error burst and the rate spike of its retries. Such a burst is explained
// by the fleet, not by the device: per class, the volume statistics keep two
// 256-bit sketches of devices per minute of event time, those seen and those
// answered with a 5xx, for the current and the previous minute (the halves
// are chosen by the minute's parity, so a new minute clears one half and
// copies nothing). A class fails when, over those one to two minutes, at
// least FleetMinDevices other devices, and at least FleetShare of the
// devices seen, got a 5xx (ClassFailing). The background of 5xx (a retried
// one in a few hundred requests) makes far fewer; a single device failing
// alone, or a few of a large class, do not make a class fail.
//
// A minute turning over clears its half while another worker may be setting
// a bit in it: a bit may be lost, which errs on the side of alerting.
const (
	// FailBucketNs is the length of a failure bucket of a class (one minute of
	// event time); the sketches cover the current and the previous one.
	FailBucketNs = int64(60e9)
	// FleetMinDevices is the smallest estimated number of other devices of
	// the class answered with a 5xx in the buckets for a class failure, and
	// FleetShare the smallest share of the class's devices seen in them.
	FleetMinDevices = 4.0
	FleetShare      = 0.1
	// FleetRetryShare is the smallest share of the device's short-window
	// requests that failed (errors and auth failures), or FleetRetryMin the
	// smallest short-window count of them, for its rate spike to be the
	// retries of a class failure.
	FleetRetryShare = 0.25
	FleetRetryMin   = 2.0
	// FleetScore is the score of an error burst or retry storm explained by a
	// class failure (ReasonFleetErrors): far below the alert threshold, like
	// a silence, so that it adds to strong evidence only.
	FleetScore = 0.15
	// FleetRecoverNs is how long a class failure explains the rate spikes of
	// the devices it failed: the retries a device queued with exponential
	// backoff (up to a few minutes), and its own requests held back, arrive
	// together when the backend is back, with no error left in its short
	// window. For FleetRecoverNs after the last minute its class was
	// failing, a rate spike of a device that itself got a 5xx within
	// FleetRecoverNs is the failure's catch-up, a fleet_errors finding.
	FleetRecoverNs = int64(10 * 60e9)
	// catchUpRatio bounds a catch-up: a device that held back FleetRecoverNs
	// of requests and sends them all in one short window, next to that
	// window's own, sends at most this many times its expected short-window
	// count. A rate spike above it is not a catch-up (with an attack's
	// flood, the device's own 5xx and a class failure near it in time had
	// a flood of basic seed 1 with --entities scored fleet_errors: missed).
	catchUpRatio = float64(FleetRecoverNs)/1e9/TauShort + 1
	// failWords is the size, in 64-bit words, of a failure sketch (256 bits:
	// accurate to a few percent up to ~700 devices).
	failWords = 4
	// fleetKey is the key of the fleet-wide failure sketches (a slot of the
	// class table like a class's), which sample the devices whose key has
	// its low fleetSampleBits bits zero (one in 16: accurate up to ~11,000
	// devices active in two minutes). A backend incident fails the whole
	// fleet at once: a small class, or one few of whose devices are active,
	// shows it only after its devices' first error bursts, the fleet at once.
	fleetKey        = uint64(0x6a09e667f3bcc908)
	fleetSampleBits = 4
)

// failIndex returns the index of the first word of half h (0 or 1) of class
// slot j's sketches.
func failIndex(j int, h int64) int { return (j*2 + int(h&1)) * failWords }

// failBit returns device's bit in a failure sketch: its word and its bit.
func failBit(device uint64) (int, uint) { b := uint(device >> 56); return int(b >> 6), b & 63 }

// learnFail records ev's device as seen, and as failing when ev was answered
// with a 5xx, in the bucket of ev's time of class slot j.
func (t *Stats) learnFail(j int, ev *schemas.Event) {
	if ev.Time <= 0 {
		return
	}
	b := ev.Time / FailBucketNs
	w := &t.failBucket[j]
	for {
		cur := int64(w.Load()) - 1 // -1: no bucket yet
		if cur == b || cur == b+1 {
			break // this bucket, or a late event of the previous one
		}
		if cur > b+1 {
			return // too late to count
		}
		if w.CompareAndSwap(uint64(cur+1), uint64(b+1)) {
			// b's half held b-2 or older; the other one b-1, or older.
			t.clearFail(failIndex(j, b))
			if cur < b-1 {
				t.clearFail(failIndex(j, b+1))
			}
			break
		}
	}
	i, bit := failBit(ev.DeviceKey)
	at := failIndex(j, b) + i
	detectors.SetBit(&t.failSeen[at], bit)
	if ev.Status >= 500 && ev.Status < 600 {
		detectors.SetBit(&t.failFailing[at], bit)
		// Remember the latest bucket in which the class (or the fleet)
		// was failing (judged on 5xx events only: the background makes
		// few).
		if t.failingAt(j, ev.DeviceKey, ev.Time) || t.fleetFailing(ev.DeviceKey, ev.Time) {
			for l := &t.failLast[j]; ; {
				old := l.Load()
				if int64(old) >= b+1 || l.CompareAndSwap(old, uint64(b+1)) {
					break
				}
			}
		}
	}
}

// ClassFailedAt returns the start (Unix ns) of the latest failure bucket in
// which the class was failing (ClassFailing, judged on its 5xx events), 0
// when none is known. It implements ClassRecoverer and does not allocate.
func (t *Stats) ClassFailedAt(class uint64) int64 {
	j := detectors.Slot(t.keys, class, false)
	if j < 0 {
		return 0
	}
	b := int64(t.failLast[j].Load())
	if b <= 0 {
		return 0
	}
	return (b - 1) * FailBucketNs
}

// clearFail zeroes one half's sketches from index at.
func (t *Stats) clearFail(at int) {
	for i := at; i < at+failWords; i++ {
		t.failSeen[i].Store(0)
		t.failFailing[i].Store(0)
	}
}

// ClassFailing reports whether the class is failing at time now (Unix ns):
// whether, over the current and the previous failure bucket, at least
// FleetMinDevices devices other than device, and at least FleetShare of the
// class's devices seen, were answered with a 5xx, or the fleet is failing
// so (fleetKey). It also returns the class's two estimates. It does not
// allocate.
func (t *Stats) ClassFailing(class, device uint64, now int64) (failing bool, others, seen float64) {
	onesFailing, onesSeen := t.failOnes(class, device, now)
	others = detectors.LinearCount(failWords*64, onesFailing)
	seen = detectors.LinearCount(failWords*64, onesSeen)
	failing = others >= FleetMinDevices && others >= FleetShare*seen
	return failing || t.fleetFailing(device, now), others, seen
}

// fleetFailing reports whether the fleet is failing at time now: the
// fleet-wide sketches (fleetKey) judged as a class's.
func (t *Stats) fleetFailing(device uint64, now int64) bool {
	j := detectors.Slot(t.keys, fleetKey, false)
	return j >= 0 && t.failingAt(j, device, now)
}

// learnFleetFail records ev in the fleet-wide failure sketches when its
// device is one of their sample.
func (t *Stats) learnFleetFail(ev *schemas.Event) {
	if ev.DeviceKey&(1<<fleetSampleBits-1) != 0 {
		return
	}
	if j := detectors.Slot(t.keys, fleetKey, true); j >= 0 {
		t.learnFail(j, ev)
	}
}

// classFailing is ClassFailing's verdict alone, for the hot path: a class
// with fewer than FleetMinDevices failing bits (3 bits estimate 3.02
// devices, 4 bits 4.03) is not failing, with no logarithm computed.
func (t *Stats) classFailing(class, device uint64, now int64) bool {
	if j := detectors.Slot(t.keys, class, false); j >= 0 && t.failingAt(j, device, now) {
		return true
	}
	return t.fleetFailing(device, now)
}

// failingAt is classFailing for class slot j.
func (t *Stats) failingAt(j int, device uint64, now int64) bool {
	onesFailing, onesSeen := t.failOnesAt(j, device, now)
	if float64(onesFailing) < FleetMinDevices {
		return false
	}
	others := detectors.LinearCount(failWords*64, onesFailing)
	return others >= FleetMinDevices && others >= FleetShare*detectors.LinearCount(failWords*64, onesSeen)
}

// failOnes returns the bits set in the class's sketches of failing devices
// (device's own bit cleared) and of devices seen, over the current and the
// previous failure bucket of time now.
func (t *Stats) failOnes(class, device uint64, now int64) (onesFailing, onesSeen int) {
	j := detectors.Slot(t.keys, class, false)
	if j < 0 {
		return 0, 0
	}
	return t.failOnesAt(j, device, now)
}

// failOnesAt is failOnes for class slot j.
func (t *Stats) failOnesAt(j int, device uint64, now int64) (onesFailing, onesSeen int) {
	if now <= 0 {
		return 0, 0
	}
	b := now / FailBucketNs
	cur := int64(t.failBucket[j].Load()) - 1
	if cur < b-1 || cur > b+1 {
		return 0, 0 // nothing recent (or now is long past)
	}
	wi, bit := failBit(device)
	for i := range failWords {
		var s, f uint64
		for _, h := range [2]int64{b, b - 1} {
			if h == cur || h == cur-1 {
				at := failIndex(j, h) + i
				s |= t.failSeen[at].Load()
				f |= t.failFailing[at].Load()
			}
		}
		if i == wi {
			f &^= 1 << bit
		}
		onesSeen += bits.OnesCount64(s)
		onesFailing += bits.OnesCount64(f)
	}
	return onesFailing, onesSeen
}

// ClassFailer is implemented by a fleet view that knows whether a class is
// failing at once (Stats). It is optional: without it, a device's error burst
// is always its own.
type ClassFailer interface {
	// ClassFailing reports whether the class is failing at time now: many of
	// its devices other than device answered with a 5xx in the last minutes
	// (and how many, against how many were seen).
	ClassFailing(class, device uint64, now int64) (failing bool, others, seen float64)
}

// ClassRecoverer is implemented by a fleet view that remembers when a class
// last failed at once (Stats). It is optional: without it, the catch-up of a
// device's retries after a class failure is judged as the device's own.
type ClassRecoverer interface {
	// ClassFailedAt returns the start (Unix ns) of the latest minute in
	// which the class was failing, 0 when none is known.
	ClassFailedAt(class uint64) int64
}

// classRecovering reports whether ev's class was failing within
// FleetRecoverNs before ev's time (FleetRecoverNs).
func classRecovering(fleet detectors.Fleet, ev *schemas.Event) bool {
	var at int64
	switch cr := fleet.(type) {
	case *Stats: // the detector's own statistics: no interface lookup
		at = cr.ClassFailedAt(ev.ClassKey)
	case ClassRecoverer:
		at = cr.ClassFailedAt(ev.ClassKey)
	}
	return at > 0 && ev.Time-(at+FailBucketNs) < FleetRecoverNs
}

// classFailing asks the fleet view whether ev's class is failing at ev's time.
func classFailing(fleet detectors.Fleet, ev *schemas.Event) bool {
	switch cf := fleet.(type) {
	case *Stats: // the detector's own statistics: no interface lookup
		return cf.classFailing(ev.ClassKey, ev.DeviceKey, ev.Time)
	case ClassFailer:
		failing, _, _ := cf.ClassFailing(ev.ClassKey, ev.DeviceKey, ev.Time)
		return failing
	}
	return false
}
