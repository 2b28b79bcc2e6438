package volume

import (
	"encoding/binary"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// A class's typical burstiness (ClassBurst) is the median of the burst
// memories (BurstMargin) of the devices its rate sample follows
// (classrate.go) that have one, when at least RateMinDevices and a quarter
// of the usable samples have one (the upper quartile for the ratios, the
// median for the length): the sample slot keeps its device's remembered
// short-window and run ratios and length, and those of its open episode,
// copied from the device's record on each of its events; each device counts
// with the larger of the two. A class whose devices start their sessions at
// once (the morning rush hour of a fleet of vehicles) is a class that
// bursts: the open episodes count before any of them has ended, while a few
// devices of a steady class flooding at once cannot make it one. A class whose devices work in sessions (every vehicle
// makes trips, some hours apart) thus gives a device the burstiness of its
// peers before its own first session, as ClassRate gives a new device its
// peers' rate; a class of steady devices has no memories and changes
// nothing: a few of its devices flooding at once cannot give it one. The
// model (the class across tenants, Event.ModelKey) samples devices as a
// class does, and a class that knows no burstiness borrows its model's: a
// tenant's vehicles at night are judged with the sessions of the model's
// vehicles where it is day.

// ClassBurster is implemented by a fleet view that knows a class's typical
// burstiness (Stats). It is optional: without it, a device is judged against
// its own burst memory only.
type ClassBurster interface {
	// ClassBurst returns the median remembered ratios of the short window's
	// and of the run's count to their expectations, and the median episode
	// length, among the class's sampled devices that remember a burst, 0
	// when too few do.
	ClassBurst(class uint64) (short, run, length float64)
}

// learnBurst copies the burst memory of the device of sample slot i from its
// record before (the device's state before the event), if it has one.
func (t *Stats) learnBurstSample(i int, before []byte) {
	if len(before) < StateSize {
		return
	}
	t.rateBurst[i].Store(uint64(binary.LittleEndian.Uint32(before[burstAt:])) |
		uint64(binary.LittleEndian.Uint32(before[peakAt:]))<<32)
}

// ClassBurst returns the median remembered short-window and run ratios and
// episode lengths of
// the class's usable sampled devices (those ClassRate counts) that remember
// a burst, 0 when fewer than RateMinDevices and a quarter of them do. It
// implements ClassBurster and does not allocate.
func (t *Stats) ClassBurst(class uint64) (short, run, length float64) {
	j, o, jo := t.sampleSlots(class)
	if j < 0 && jo < 0 {
		return 0, 0, 0
	}
	// The stored forms are monotone in the values (putBurst): they are
	// compared and sorted as they are, and only the three chosen are decoded.
	var shorts, runs, lengths [rateSlots]uint16
	n, usable := 0, 0
	for s := range rateSlots {
		src, i := pickSample(t, j, o, jo, s)
		if src == nil || !src.usableSample(i) {
			continue
		}
		usable++
		w := src.rateBurst[i].Load()
		le, ple := uint16(w>>16), uint16(w>>48)
		if le == 0 && ple == 0 {
			continue // no episode remembered or open
		}
		insertSorted(shorts[:n+1], max(uint16(w&0xff), uint16(w>>32&0xff)))
		insertSorted(runs[:n+1], max(uint16(w>>8&0xff), uint16(w>>40&0xff)))
		insertSorted(lengths[:n+1], max(le, ple))
		n++
	}
	if n < RateMinDevices || 4*n < usable {
		return 0, 0, 0
	}
	q := 3 * (n - 1) / 4 // the upper quartile
	var b [4]byte
	b[0], b[1] = uint8(shorts[q]), uint8(runs[q])
	short, run, _ = getBurst(b[:])
	return short, run, (float64(lengths[(n-1)/2]) + float64(lengths[n/2])) / 2
}

// insertSorted puts v into sorted s[:len(s)-1], making s sorted.
func insertSorted(s []uint16, v uint16) {
	k := len(s) - 1
	for ; k > 0 && s[k-1] > v; k-- {
		s[k] = s[k-1]
	}
	s[k] = v
}

// median returns the median of sorted s (not empty).
func median(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// classBurstUp reads the class's typical burstiness from the fleet view
// into s.classShort and s.classRun (once per event) and reports whether it
// raises the thresholds the device's own memory sets.
func (s *state) classBurstUp(ev *schemas.Event, fleet detectors.Fleet) bool {
	if !s.classRead {
		s.classRead = true
		switch cb := fleet.(type) {
		case *Stats: // the detector's own statistics: no interface lookup
			s.classShort, s.classRun, s.classLen = cb.ClassBurst(ev.ClassKey)
			if s.classLen == 0 && ev.HasModel() {
				s.classShort, s.classRun, s.classLen = cb.ClassBurst(ev.ModelKey)
			}
		case ClassBurster:
			s.classShort, s.classRun, s.classLen = cb.ClassBurst(ev.ClassKey)
			if s.classLen == 0 && ev.HasModel() {
				s.classShort, s.classRun, s.classLen = cb.ClassBurst(ev.ModelKey)
			}
		}
	}
	return s.classLen > 0 && (s.classShort > s.burstShort || s.classRun > s.burstRun || s.classLen > s.burstLen)
}

// shortRatio and runRatio return the smallest ratios of a short-window and
// of a run count to their expectations for a rate spike: MinRatio and
// RunMinRatio, or BurstMargin times the device's (or, once read, its
// class's) remembered burst, whichever is larger, while the open episode is
// no longer than BurstLenMargin times the remembered one. The short window
// takes the remembered run ratio too: a run at R times the baseline fills
// a short window R times over (a vehicle's trips keep fewer than MinSpike
// requests in most short windows, so its short memory stays empty while
// its run memory knows the trips).
func (s *state) shortRatio() float64 {
	if !s.inSession() {
		return MinRatio
	}
	return max(MinRatio, BurstMargin*max(s.burstShort, s.classShort, s.burstRun, s.classRun))
}

func (s *state) runRatio() float64 {
	if !s.inSession() {
		return RunMinRatio
	}
	return max(RunMinRatio, BurstMargin*max(s.burstRun, s.classRun))
}

// classSessionRun returns the class's remembered run ratio (read by
// classBurstUp) when the device's own memory allows less than a class
// session (none, or one whose margin, BurstMargin times its run ratio, is
// still below the class's ratio) and the open episode is a session by the
// class's length (inSession); 0 otherwise.
// Such a device's run is then judged with the Poisson tail of its count
// against the count a class session would send over its span (this ratio
// times the baseline's expectation), as well as against its baseline: its
// first sessions lean on the class's evidence, which says what a session
// of the class sends, not how this device's sessions go. A ratio margin
// alone (runRatio) judges a handful of requests as if their ratio were
// known: the first 8 requests of a vehicle's trip, 40 times a parked
// rate, are 2 times its class's remembered sessions by their ratio but as
// probable as not under one (8 where 4 are expected). A young memory is no
// better: a vehicle that remembers one trip at 10 times its baseline
// (measured against a baseline that had learned part of it) in a class
// whose trips go to 20 times meets the next trip's start at 40 times its
// parked rate (field seed 1's rov-000106; bench/RESULTS.md, f2).
// A device whose own memory's margin covers its class's sessions is judged
// by the ratio margin as before: its memory is its own sessions',
// measured against its own baseline, and the margin is what catches a
// flood just above a camera's own sessions (field seed 1's camera flood,
// 16 requests at 24 times a baseline where its own sessions went to 14 and
// its class's to 16: as a count under a class session, 16 where 11 are
// expected, it would wait 100 s more).
//
// A device with no session of its own keeps this test however long its
// burst lasts: the class's episode length (the median of its sampled
// devices' episodes) is no measure of a session's length while those
// episodes are open (a part of a trip), or were cut short (a session the
// baseline has learned is a run only while it stays 4 times above it, so a
// long trip ends and reopens as episodes of a few events). Judged as if it
// had no memory, a first trip longer than three such lengths was a rate
// spike at 16 times a baseline the trip itself, learned as a suspect run,
// could not raise (field seed 2: 8 of its 11 false rate spikes, vehicles'
// first trips against class lengths of 2 to 12 events). A flood is
// improbable as a class session too; a device with a memory of its own
// keeps the length it measured itself.
func (s *state) classSessionRun() float64 {
	if s.classRun <= max(1, BurstMargin*s.burstRun) || (s.burstLen > 0 && !s.inSession()) {
		return 0
	}
	return s.classRun
}

// inSession reports whether the open burst episode is no longer than
// BurstLenMargin times the device's (or its class's, once read) remembered
// episode length.
func (s *state) inSession() bool {
	return s.peakLen <= BurstLenMargin*max(s.burstLen, s.classLen)
}
