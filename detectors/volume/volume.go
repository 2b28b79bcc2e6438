// Package volume scores a device's request, authentication-failure and error
// rates against the device's own baseline.
//
// Each rate is kept twice as a time-decayed count: a short window (time constant
// TauShort) that says what the device is doing now, and a long baseline (time
// constant TauLong) that says what it usually does. The baseline rate is the
// long count divided by the device's decayed exposure time, and the expected
// short-window count is that rate times TauShort. A short-window count is scored
// with the Poisson right tail (detectors.PoissonSurprise), never a Gaussian
// z-score, so that small counts are judged correctly.
//
// The baseline does not learn from what the detector flags: a flagged event
// updates the short windows but not the baseline, so a flood cannot teach the
// device that floods are normal. Long silences count for at most a few typical
// gaps of exposure, so a device that was off overnight keeps its daytime rate.
package volume

import (
	"encoding/binary"
	"math"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters. They are constants in this first version; the Spec documents them.
const (
	// TauShort is the time constant of the short window, in seconds.
	TauShort = 30.0
	// TauMedium is the time constant of a second request window, in seconds: a
	// flood too slow to fill the short window (a meter sending every 13 s
	// instead of every 5 min) fills this one within minutes.
	TauMedium = 300.0
	// TauLong is the time constant of the baseline, in seconds.
	TauLong = 3600.0
	// WarmEvents and WarmExposure (seconds) gate findings: a device with less
	// history produces none.
	WarmEvents   = 20
	WarmExposure = 600.0
	// MinSpike is the smallest short-window request count that can be a rate
	// spike, and MinRatio the smallest ratio of observed to expected count for
	// any finding: together they absorb jitter and over-dispersed traffic.
	MinSpike = 8.0
	MinRatio = 4.0
	// MinFailures and MinErrors are the smallest short-window counts of auth
	// failures and of errors that can be a burst.
	MinFailures = 6.0
	MinErrors   = 6.0
	// FloorExpected is the smallest expected short-window count of requests,
	// failures or errors: a device with no failures in its history is expected
	// to have about one every TauShort/FloorExpected seconds at worst.
	FloorExpected = 0.1
	// MinSurprise (decades, see detectors.PoissonSurprise) is the tail
	// probability threshold: 1e-6.
	MinSurprise = 6.0
	// minGapCap bounds the exposure a silence can add, in seconds, together
	// with gapCapFactor times the device's mean gap between requests.
	minGapCap    = 300.0
	gapCapFactor = 4.0
	// maxCount bounds decayed counts read from a record; larger or non-finite
	// values (a corrupt record) read as zero.
	maxCount = 1e12
)

// StateSize is the size of the per-device record.
const StateSize = 44

// Record layout, little-endian:
//
//	0:8   last event time, Unix ns (int64)
//	8:12  number of events seen, saturating (uint32)
//	12:16 short-window request count (float32)
//	16:20 baseline request count (float32)
//	20:24 baseline exposure, seconds (float32)
//	24:28 short-window auth-failure count (float32)
//	28:32 baseline auth-failure count (float32)
//	32:36 short-window error count (float32)
//	36:40 baseline error count (float32)
//	40:44 medium-window request count (float32)
type state struct {
	last                  int64
	n                     uint32
	short, long, exposure float64
	failShort, failLong   float64
	errShort, errLong     float64
	medium                float64
}

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint64(b[0:]))
	s.n = binary.LittleEndian.Uint32(b[8:])
	s.short = f32(b[12:])
	s.long = f32(b[16:])
	s.exposure = min(f32(b[20:]), TauLong)
	s.failShort = f32(b[24:])
	s.failLong = f32(b[28:])
	s.errShort = f32(b[32:])
	s.errLong = f32(b[36:])
	s.medium = f32(b[40:])
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.last))
	binary.LittleEndian.PutUint32(b[8:], s.n)
	putF32(b[12:], s.short)
	putF32(b[16:], s.long)
	putF32(b[20:], s.exposure)
	putF32(b[24:], s.failShort)
	putF32(b[28:], s.failLong)
	putF32(b[32:], s.errShort)
	putF32(b[36:], s.errLong)
	putF32(b[40:], s.medium)
}

// f32 reads a count; negative, huge or non-finite values read as 0.
func f32(b []byte) float64 {
	v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	if !(v >= 0 && v <= maxCount) {
		return 0
	}
	return v
}

func putF32(b []byte, v float64) { binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v))) }

// Detector is the volume detector. The zero value is ready to use.
type Detector struct{}

// Doc is the catalog paragraph.
const Doc = "Request, auth-failure (auth failed or HTTP 401) and error (other 4xx/5xx) rates of a device against " +
	"its own baseline. Each is a time-decayed count over a short window (tau 30 s; requests also over a medium " +
	"window, tau 5 min, for slower floods) compared with the count the " +
	"device's long-term rate (tau 1 h, not updated by flagged events, long silences capped) predicts for that " +
	"window, scored with the Poisson right tail. Observed is the window's count (including this event), " +
	"Expected the baseline-expected count in the same window (the window that scores higher). Fires when the tail probability is below 1e-6, the " +
	"count is at least 4x expected and at least 8 requests / 6 failures / 6 errors; score 0.5 at 1e-6, rising to 1. " +
	"No findings until the device has 20 events and 10 minutes of history. An auth-failure or error burst is " +
	"reported in preference to the rate spike it also causes."

func init() {
	detectors.Register(detectors.Spec{
		Name:      schemas.DetectorVolume,
		Doc:       Doc,
		StateSize: StateSize,
		Reasons:   []string{schemas.ReasonRateSpike, schemas.ReasonAuthFailures, schemas.ReasonErrorBurst},
		New:       func() detectors.Detector { return Detector{} },
	})
}

// Observe implements detectors.Detector.
func (Detector) Observe(ev *schemas.Event, b []byte, _ detectors.Fleet) schemas.Finding {
	if len(b) < StateSize {
		return schemas.Finding{}
	}
	var s state
	s.load(b)

	// Seconds since the previous event; 0 for the first one and for an event
	// older than the last one (late events are counted, not time-travelled).
	dt := detectors.Advance(&s.last, s.n == 0, ev.Time)

	fail := 0.0
	if ev.Auth == schemas.AuthFailed || ev.Status == 401 {
		fail = 1
	}
	errs := 0.0
	if fail == 0 && ev.Status >= 400 && ev.Status < 600 {
		errs = 1
	}

	ds := detectors.Decay(dt / TauShort)
	s.short = s.short*ds + 1
	s.failShort = s.failShort*ds + fail
	s.errShort = s.errShort*ds + errs
	s.medium = s.medium*detectors.Decay(dt/TauMedium) + 1

	// A silence adds at most a few typical gaps of exposure.
	gapCap := minGapCap
	if s.long > 0 {
		gapCap = max(gapCap, gapCapFactor*s.exposure/s.long)
	}
	dl := detectors.Decay(min(dt, gapCap) / TauLong)
	s.long *= dl
	s.failLong *= dl
	s.errLong *= dl
	s.exposure = s.exposure*dl + TauLong*(1-dl)

	var f schemas.Finding
	if s.n >= WarmEvents && s.exposure >= WarmExposure {
		// Expected counts in the short window at the baseline rates. A burst of
		// failures or errors is reported in preference to the spike it causes.
		perWindow := TauShort / s.exposure
		reason, observed, expected := schemas.ReasonNone, 0.0, 0.0
		var score float32
		switch {
		case fail > 0:
			reason, observed, expected = schemas.ReasonAuthFailures, s.failShort, max(s.failLong*perWindow, FloorExpected)
			score = judge(observed, expected, MinFailures)
		case errs > 0:
			reason, observed, expected = schemas.ReasonErrorBurst, s.errShort, max(s.errLong*perWindow, FloorExpected)
			score = judge(observed, expected, MinErrors)
		}
		if score == 0 {
			reason, observed, expected = schemas.ReasonRateSpike, s.short, max(s.long*perWindow, FloorExpected)
			score = judge(observed, expected, MinSpike)
			// The medium window, for floods too slow to fill the short one,
			// while they last: the short window must still be running high, so
			// normal requests after a burst do not inherit its finding.
			mExpected := max(s.long*TauMedium/s.exposure, FloorExpected)
			if s.short >= MinRatio*expected {
				if m := judge(s.medium, mExpected, MinSpike); m > score {
					observed, expected, score = s.medium, mExpected, m
				}
			}
		}
		if score > 0 {
			f = schemas.Finding{
				Detector: schemas.DetectorVolume,
				Reason:   reason,
				Score:    score,
				Observed: observed,
				Expected: expected,
			}
		}
	}
	if f.Reason == schemas.ReasonNone {
		s.long++
		s.failLong += fail
		s.errLong += errs
	}
	if s.n < math.MaxUint32 {
		s.n++
	}
	s.store(b)
	return f
}

// judge returns the score of observed against expected: 0 unless observed is
// a burst of at least minCount and MinRatio times expected.
func judge(observed, expected, minCount float64) float32 {
	if observed < minCount || observed < MinRatio*expected {
		return 0
	}
	return detectors.SurpriseScore(detectors.PoissonSurprise(observed, expected), MinSurprise)
}
