package volume

import (
	"math"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Silence while it lasts: Detector implements detectors.Sweeper, so that a
// worker's sweep reports a device that stopped sending at the moment its gap
// becomes a silence ("meter-000157 stopped reporting 70 minutes ago"), instead
// of only when it comes back. The threshold is the one Observe applies to a
// returning device: a gap of at least MinSilence whose Poisson surprise
// (detectors.GapSurprise against the mean gap) is at least MinSurprise, that
// is a gap of max(MinSilence, MinSurprise·ln10·mean gap). The sweep's finding
// and the returning device's are the same (silenceFinding), so that both rows
// of one silence read alike: the sweep's with the gap at the threshold, the
// return's with the whole gap.

// maxSilenceNudge bounds the nanoseconds SilentAt steps forward so that its
// time passes the float comparisons of silent (one step at most in practice).
const maxSilenceNudge = 4

// silent reports whether a gap of dt seconds is a silence for a device whose
// mean gap is meanGap seconds (Observe's rule, for a warm device).
func silent(dt, meanGap float64) bool {
	return dt >= MinSilence && detectors.GapSurprise(dt, meanGap) >= MinSurprise
}

// silenceFinding is the finding for a silence of gap seconds where meanGap
// was usual; gap must be silent.
func silenceFinding(gap, meanGap float64) schemas.Finding {
	return schemas.Finding{Detector: Name, Reason: ReasonSilence,
		Score: silenceScore(gap), Observed: gap, Expected: meanGap}
}

// gapSeconds is the gap from last to t (Unix ns) as Observe measures it
// (detectors.Advance): 0 when t is not after last.
func gapSeconds(last, t int64) float64 {
	if t <= last {
		return 0
	}
	return float64(uint64(t)-uint64(last)) / 1e9
}

// warmSilence loads b and returns the device's state and mean gap, and whether
// it can be silent at all: warm (Observe's rule) with a baseline.
func warmSilence(b []byte) (s state, meanGap float64, ok bool) {
	if len(b) < StateSize {
		return s, 0, false
	}
	s.load(b)
	if !(s.n >= WarmEvents && s.exposure >= WarmExposure) {
		return s, 0, false
	}
	meanGap = s.meanGap()
	return s, meanGap, meanGap > 0 && !math.IsInf(meanGap, 1)
}

// SilentAt implements detectors.Sweeper: the time at which the device's gap
// since its last event reaches max(MinSilence, MinSurprise·ln10·mean gap).
// It does not allocate.
func (Detector) SilentAt(b []byte) (at int64, ok bool) {
	s, meanGap, ok := warmSilence(b)
	if !ok {
		return 0, false
	}
	ns := math.Ceil(max(MinSilence, MinSurprise*math.Ln10*meanGap) * 1e9)
	if !(ns < float64(math.MaxInt64-maxSilenceNudge)) || s.last > math.MaxInt64-maxSilenceNudge-int64(ns) {
		return 0, false // beyond the representable times: never
	}
	at = s.last + int64(ns)
	// Rounding may leave the gap at the threshold a hair short of it.
	for range maxSilenceNudge {
		if silent(gapSeconds(s.last, at), meanGap) {
			return at, true
		}
		at++
	}
	return 0, false
}

// Silence implements detectors.Sweeper: the silence finding of a device that
// has sent nothing since its last event, as of now. It does not allocate.
func (Detector) Silence(b []byte, now int64) schemas.Finding {
	s, meanGap, ok := warmSilence(b)
	if !ok {
		return schemas.Finding{}
	}
	gap := gapSeconds(s.last, now)
	if !silent(gap, meanGap) {
		return schemas.Finding{}
	}
	return silenceFinding(gap, meanGap)
}
