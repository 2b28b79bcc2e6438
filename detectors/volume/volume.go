// Package volume scores a device's request, authentication-failure, error and
// bytes-out rates against the device's own baseline, and the gaps it leaves.
//
// Each rate is kept twice as a time-decayed count: a short window (time constant
// TauShort) that says what the device is doing now, and a long baseline (time
// constant TauLong) that says what it usually does. The baseline rate is the
// long count divided by the device's decayed exposure time, and the expected
// short-window count is that rate times TauShort. A short-window count is scored
// with the Poisson right tail (detectors.PoissonSurprise), never a Gaussian
// z-score, so that small counts are judged correctly.
//
// A window of fixed length is slow on a flood that is fast for the device but
// slow in absolute terms (a meter of one request per 5 minutes sending one
// every 13 s never has more than 3 requests in 30 s). Requests are therefore
// also followed as a run, a Poisson CUSUM: the stretch of recent requests
// arriving faster than about 4 times the baseline rate, with its count and the
// count the baseline expects over the same span. The run picks the span a
// flood has lasted, so its count is judged with the Poisson tail against the
// right expectation: 8 requests where 0.3 were expected (1e-7) are flagged
// after 90 s, where a 5-minute window would wait for 12.
//
// The baseline learns robustly from what the detector flags: an event flagged
// for its request, failure or error count counts in the baselines as if it
// had come at LearnCap (2) times the baseline rate at most, so a flood cannot
// teach the device that floods are normal (a 5-minute flood raises the
// baseline by a few percent), while a lasting change of level is learned
// within about an hour instead of being flagged for ever (learning nothing
// from flagged events would also let the baseline decay under them, a
// spiral). The same holds for the requests of a run already suspect
// (SuspectSurprise) before it is flagged. An event flagged for its size, or
// for a drift or silence before it, came at a normal rate and is counted.
// Long silences count for at most a few typical gaps of exposure, so a
// device that was off overnight keeps its daytime rate.
//
// Sessions: a camera uploading its motion clips, a vehicle reporting its
// track during a trip burst far above their long-term rate each time they
// are used, and no baseline rate explains it. The detector remembers the
// device's burst episodes (BurstMargin, learnBurst): their largest ratios
// to the baseline and their length, learned when an episode ends, so a
// flood is judged against the device's earlier sessions and never against
// itself. A burst within 1.5 times the remembered ratios, no longer than
// three times the remembered length, is a session; a longer one is judged as if
// the device had none. A fleet view that implements ClassBurster (Stats:
// the memories and open episodes of the class's sampled devices,
// classburst.go) gives a device its class's memory before its own first
// session.
//
// Daily cycles: a baseline of time constant TauLong lags a sharp daily ramp
// (a shop opening) by about an hour, long enough for the ramp to look like a
// flood. A fleet view that implements ClassRamper (Stats: the
// class's 24-hour cycle, learned from its sampled devices) says how much
// busier the class usually is now than a TauLong ago; the rate, failure and
// error expectations are multiplied by that ramp (at least 1, so a cycle
// never lowers an expectation). The device's own baseline still follows its
// own cycle, with its lag.
//
// Bytes out (the response sizes the gateway sends to the client) are
// heavy-tailed even for a healthy device: a firmware download of a megabyte
// next to 40-byte telemetry acks, a config read now and then. Neither a mean
// nor a variance describes them, so the detector keeps the device's typical
// response size instead: a log-domain tracker of its median (logMid, moved
// MidStep towards each response). Bytes out are then scored twice, and one
// large response, however large, is neither:
//   - bytes_out_spike (fast): a response more than OversizeFactor times the
//     typical size is oversized; many oversized responses within minutes (the
//     medium window) are bulk reads, an IDOR returning other owners' data;
//   - bytes_out_drift (slow): the mean response size of each closed 5-minute
//     bucket, each response capped at CapFactor times the typical size (so a
//     download cannot move it), feeds a Core (core.go, the model `iotwatch
//     eval nab` measures) with a daily harmonic, which catches responses
//     growing gradually (the tracker follows a lasting rise within dozens of
//     responses, so the cap does not hide it). The mean, not the total, so
//     that the daily cycle of request rates is not a drift.
//
// Backend incidents: when the backend fails a whole class at once (a
// fleet-wide 503 storm), every device of it shows an error burst and the
// rate spike of its retries against its own baseline. A fleet view that
// implements ClassFailer (Stats: which devices of the class were answered
// with a 5xx in the last minute or two, or as many of the whole fleet's,
// classerrors.go) explains them: such
// a burst is a fleet_errors finding, scored FleetScore, far below the alert
// threshold. A device failing alone, or a few of a large class, still has
// its error burst. When the backend is back, the devices it failed send
// their queued retries and held-back requests at once: for FleetRecoverNs
// after the class last failed, a rate spike of a device that itself got a
// 5xx within FleetRecoverNs is fleet_errors too (ClassRecoverer). Both only
// as far as a failure explains them: retries resend what failed, so a
// device's short window holds at most its failures plus its own requests
// (its usual burst, or MinSpike); a catch-up is at most what it held back
// (catchUpRatio times its expectation, plus its usual burst once the class
// is served again). A flood that meets (or makes) a class failure sends far
// more and stays the device's. Requests judged the fleet's restart the run
// and teach no burst memory.
//
// Silence: a per-event detector only sees a device when it sends something, so
// a silence is reported when the device comes back, with the gap against its
// usual inter-arrival time. Devices whose normal life has long gaps (off
// overnight) make such gaps, so a silence is scored below the alert threshold:
// a recorded finding that alerts only together with other evidence. While the
// device is still silent, the worker's sweep over its records reports the
// same finding at the moment the gap becomes a silence (silence.go, the
// detectors.Sweeper methods).
//
// New devices: findings start after warm-up (WarmEvents, WarmExposure), and
// until the device graduates (GradEvents, GradExposure) its scores are capped
// at ColdMaxScore, below the default block threshold (0.9): a young baseline
// may alert but not block. A fleet view that implements ClassRater
// (Stats: the median rate of sampled devices of the class)
// gives a cold device its class's typical rate as a prior, judged with
// widened bounds, so a new device flooding from its first request is flagged
// long before its own warm-up; a warm device not yet graduated has its
// short-window rate spike judged that way too, against the larger of its
// young baseline's and its class's expectation, so that its first session
// is not judged against a baseline that has seen none.
// A run that began before the device's warm-up is not judged until the
// device graduates or it or its class remembers a session (sessionKnown).
// A device with no session of its own, or a memory whose margin is below
// its class's sessions, that leans on its class's memory has its run judged
// against a class session, not only against its baseline (classSessionRun);
// with no session of its own, however long the burst lasts.
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
	// TauMedium is the time constant of the window of oversized responses, in
	// seconds.
	TauMedium = 300.0
	// RunRatio is the rate ratio of the request run (a Poisson CUSUM): the run
	// is the stretch of recent requests arriving faster than about
	// (RunRatio-1)/ln(RunRatio) = 3.9 times the baseline rate, and it ends when
	// its log-likelihood ratio of RunRatio times the baseline rate against the
	// baseline rate falls to zero. A flood too slow to fill the short window (a
	// meter sending every 13 s instead of every 5 min) makes a run of its own
	// length, judged with the Poisson tail against what the baseline expects
	// over that span.
	RunRatio = 10.0
	// RunMinRatio is the smallest ratio of a run's count to its expected
	// count for a finding: higher than MinRatio, since a run picks its own
	// span and a device switching between regimes (a vehicle starting a trip
	// after hours parked: ten times its hourly rate) makes long runs.
	RunMinRatio = 16.0
	// MaxRun bounds the run's count: a longer run keeps its second half (count
	// and expectation halved, the same ratio), so that the evidence of a long
	// flood does not outlive it by more than a few dozen requests.
	MaxRun = 64
	// TauLong is the time constant of the baseline, in seconds.
	TauLong = 3600.0
	// WarmEvents and WarmExposure (seconds) gate findings: a device with less
	// history produces none.
	WarmEvents   = 20
	WarmExposure = 600.0
	// MinSpike is the smallest short-window or run request count that can be
	// a rate spike, and MinRatio the smallest ratio of observed to expected
	// count for any finding: together they absorb jitter and over-dispersed
	// traffic.
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
	// SuspectSurprise (decades) is the run's surprise above which its requests
	// are learned as flagged ones (LearnCap) even before they are flagged, so
	// that the first minutes of a slow flood do not raise the baseline it is
	// judged against.
	SuspectSurprise = 3.0
	// LearnCap: a flagged or suspect request is learned as if it had come at
	// most LearnCap times the baseline rate (a count of LearnCap·rate·gap,
	// at most 1): the baseline then grows by at most LearnCap per TauLong
	// under a flood, and a lasting change of level of 10x stops being
	// flagged after about ln(10/MinRatio)/ln(LearnCap)·TauLong (~1.3 h).
	LearnCap = 2.0
	// minGapCap bounds the exposure a silence can add, in seconds, together
	// with gapCapFactor times the device's mean gap between requests.
	minGapCap    = 300.0
	gapCapFactor = 4.0
	// maxCount bounds decayed counts read from a record; larger or non-finite
	// values (a corrupt record) read as zero. maxLogBytes bounds the size
	// tracker likewise (log of maxCount).
	maxCount    = 1e12
	maxLogBytes = 27.7

	// MinSilence (seconds) is the shortest gap that can be a silence, and
	// SilenceMinScore and SilenceMaxScore the score of the shortest and of
	// the longest (8 h): far below the default alert threshold (0.6,
	// pipeline/decide), since a device off overnight makes such gaps, and low
	// enough that the commands of a normal reconnect (a new command scores
	// about 0.5) do not make an alert with it (scores combine by noisy-or):
	// a recorded finding for the analyst, which adds to strong evidence only.
	MinSilence      = 1800.0
	SilenceMinScore = 0.1
	SilenceMaxScore = 0.15
	// MidStep is the step, in natural-log units of bytes, of the tracker of
	// the device's median response size: small enough that a burst of large
	// reads stays oversized for dozens of responses, large enough to follow a
	// lasting change within dozens.
	MidStep = 0.1
	// OversizeFactor times the typical size makes a response oversized, if it
	// is also at least MinOversizeBytes (tiny responses vary by large
	// factors); legitimate rare large responses (a config, a token, a
	// download) come alone. MinOversized is the smallest medium-window count
	// of oversized responses that can be a bytes-out spike, judged against
	// FloorExpected. CapFactor times the typical size caps a response in the
	// drift buckets.
	OversizeFactor   = 16.0
	MinOversizeBytes = 256.0
	MinOversized     = 6.0
	CapFactor        = 2.0
	// BucketNs is the length of the bytes-out buckets the Core steps on.
	// LogScale scales the log of a bucket's mean response size for the Core,
	// whose smallest residual scale is 0.5: a 5% change of size.
	LogScale = 10.0
	BucketNs = int64(300e9)
	// MinDriftSurprise (decades) is the threshold of the Core's calibrated
	// drift surprise (a single large bucket is the fast channel's business).
	MinDriftSurprise = 6.0
	// MinDriftPoint (decades) is the smallest point surprise of the closing
	// bucket itself for a drift finding: the drift window (an hour) outlives
	// what it saw, and a bucket back within its usual noise is not reported.
	MinDriftPoint = 1.0
	// GradEvents and GradExposure (seconds of decayed exposure, about 50
	// minutes of history) make a device graduated; before, scores are capped
	// at ColdMaxScore.
	GradEvents   = 100
	GradExposure = 2000.0
	ColdMaxScore = 0.85
	// ColdWiden multiplies MinRatio and ColdSurprise replaces MinSurprise when
	// a cold device is judged against its class's rate: wider bounds.
	ColdWiden    = 2.0
	ColdSurprise = 10.0
	// BurstMargin, BurstLenMargin and TauBurst: a device's own burstiness. Devices
	// that work in sessions (a camera's motion clips, a vehicle's trips) burst
	// far above their long-term rate every time they are used. A burst
	// episode is a stretch of events whose short window or run holds at least
	// MinSpike requests; when it ends, the largest ratio of its short-window
	// count, and of its run's count, to their expectations, and its length in
	// events, are remembered (each the larger of it and the memory, forgotten
	// with time constant TauBurst), and a rate spike then needs more than
	// BurstMargin times the remembered ratio (and at least MinRatio,
	// RunMinRatio) while the open episode is at most BurstLenMargin times the
	// remembered length: a burst much longer than any session of the device
	// is judged as if it had none (a flood lasts). Three times, not two:
	// session lengths are heavy-tailed (a camera's clips while something
	// moves, a vehicle's trips), and a device that remembers a few sessions
	// meets one more than twice its longest every few days; at twice, the
	// long sessions of field seed 1 (in sample) were 5 of its 11 false rate
	// spikes. The memory learns when an
	// episode is over, never during one, so a flood is judged against the
	// device's earlier sessions, not against itself; a device's first
	// session may alert, its next ones of the same kind do not.
	BurstMargin    = 1.5
	BurstLenMargin = 3.0
	TauBurst       = 86400.0
	// MaxBurst is the largest ratio a burst memory holds (the record keeps
	// ratios in quarters in a byte): a session at 64 times the baseline or
	// more is remembered as 63.75.
	MaxBurst = 63.75
)

// logOversize and logCap are log(OversizeFactor) and log(CapFactor), margins
// over the log-domain tracker. runStep is the run's log-likelihood ratio per
// request, ln(RunRatio); runSpan the largest expected count a run of one
// request can have, runStep/(RunRatio-1).
var (
	logOversize, logCap = math.Log(OversizeFactor), math.Log(CapFactor)
	runStep             = math.Log(RunRatio)
	runSpan             = runStep / (RunRatio - 1)
)

// ClassRater is implemented by a fleet view that knows a class's typical
// per-device request rate. It is optional: without it, a device is not judged
// before its own warm-up.
type ClassRater interface {
	// ClassRate returns the typical request rate (per second) of one device of
	// the class, or 0 when the class is not established.
	ClassRate(class uint64) float64
}

// ClassRamper is implemented by a fleet view that knows a class's daily
// cycle (Stats). It is optional: without it, a baseline
// follows a ramp with its own lag.
type ClassRamper interface {
	// ClassRamp returns how much busier the class usually is at time now
	// (Unix ns) than lag seconds before, at least 1 (1 when unknown).
	ClassRamp(class uint64, now int64, lag float64) float64
}

// StateSize is the size of the per-device record.
const StateSize = 104

// Record layout, little-endian:
//
//	0:8   last event time, Unix ns (int64)
//	8:10  number of events seen, saturating (uint16)
//	10:12 responses in the open 5-minute bucket, saturating (uint16)
//	12:16 short-window request count (float32)
//	16:20 baseline request count (float32)
//	20:24 baseline exposure, seconds (float32)
//	24:28 short-window auth-failure count (float32)
//	28:32 baseline auth-failure count (float32)
//	32:36 short-window error count (float32)
//	36:40 baseline error count (float32)
//	40:42 requests in the run, saturating at MaxRun (uint16)
//	42:44 the run's expected count as a fraction of its largest value,
//	      count·ln(RunRatio)/(RunRatio-1), in 1/65535 (uint16)
//	44:48 medium-window count of oversized responses (float32)
//	48:52 log(1 + median response size in bytes), tracked (float32)
//	52:56 bytes out in the open 5-minute bucket, each response capped (float32)
//	56:100 the bytes-out Core (Core.MarshalBinary); the two words it leaves
//	      unused hold the burst memory: at 84:88 the remembered short-window
//	      and run ratios (uint8 each, in quarters, saturating at MaxBurst) and episode length
//	      (uint16, events), at 96:100 the open episode's
//	100:104 the time of the device's latest 5xx response, Unix seconds
//	      (uint32, 0: none), for the catch-up after a class failure
//	      (FleetRecoverNs)
type state struct {
	last                  int64
	n, bucketN            uint16
	short, long, exposure float64
	failShort, failLong   float64
	errShort, errLong     float64
	runN                  uint16
	runExpected           float64
	overMedium            float64
	logMid                float64
	bucket                float64
	// core is the bytes-out Core, read from the record only when a bucket
	// closes (coreRead), and then written back: most events close none.
	core     Core
	coreRead bool
	// burstShort and burstRun are the remembered largest ratios of the
	// short window's and of the run's count to their expectations in the
	// device's past burst episodes, peakShort and peakRun those of the open
	// episode (BurstMargin); 0 for none.
	// burstLen and peakLen are the remembered and the open episode's
	// lengths, in events.
	burstShort, burstRun, burstLen float64
	peakShort, peakRun, peakLen    float64
	// classShort, classRun and classLen (not stored) are the class's typical
	// burst memory (ClassBurster), read once classRead, only to judge a rate
	// spike again (classBurstUp).
	classShort, classRun, classLen float64
	classRead                      bool
	// last5xx is the time of the device's latest 5xx response, Unix
	// seconds (0: none).
	last5xx uint32
	// ramp (not stored) multiplies the baselines' expectations: how much
	// busier the class's daily cycle usually is now than a TauLong ago
	// (ClassRamper), read only to judge a finding again (rampUp); 0 reads
	// as 1.
	ramp float64
}

// coreAt is where the Core's record starts; burstAt and peakAt are the
// Core's unused words (Core.MarshalBinary writes 0 there), which hold the
// burst memory.
const (
	coreAt  = 56
	burstAt = coreAt + 28
	peakAt  = coreAt + 40
	// last5xxAt is where the time of the device's latest 5xx is.
	last5xxAt = 100
)

// getBurst and putBurst read and write a burst memory: two ratios in
// quarters in a byte each (saturating at MaxBurst), and a length in events
// (uint16, saturating). No logarithm: they run on every event.
func getBurst(b []byte) (short, run, length float64) {
	return float64(b[0]) / 4, float64(b[1]) / 4, float64(binary.LittleEndian.Uint16(b[2:]))
}

func putBurst(b []byte, short, run, length float64) {
	b[0] = uint8(min(max(short, 0)*4, math.MaxUint8) + 0.5)
	b[1] = uint8(min(max(run, 0)*4, math.MaxUint8) + 0.5)
	binary.LittleEndian.PutUint16(b[2:], uint16(min(max(length, 0), math.MaxUint16)+0.5))
}

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint64(b[0:]))
	s.n = binary.LittleEndian.Uint16(b[8:])
	s.bucketN = binary.LittleEndian.Uint16(b[10:])
	s.short = f32(b[12:])
	s.long = f32(b[16:])
	s.exposure = min(f32(b[20:]), TauLong)
	s.failShort = f32(b[24:])
	s.failLong = f32(b[28:])
	s.errShort = f32(b[32:])
	s.errLong = f32(b[36:])
	s.runN = min(binary.LittleEndian.Uint16(b[40:]), MaxRun)
	if q := binary.LittleEndian.Uint16(b[42:]); q != 0 { // 0 reads as 0: no division (a device at its usual pace)
		s.runExpected = float64(q) / math.MaxUint16 * float64(s.runN) * runSpan
	}
	s.overMedium = f32(b[44:])
	s.logMid = min(f32(b[48:]), maxLogBytes)
	s.bucket = f32(b[52:])
	s.burstShort, s.burstRun, s.burstLen = getBurst(b[burstAt:])
	s.peakShort, s.peakRun, s.peakLen = getBurst(b[peakAt:])
	s.last5xx = binary.LittleEndian.Uint32(b[last5xxAt:])
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.last))
	binary.LittleEndian.PutUint16(b[8:], s.n)
	binary.LittleEndian.PutUint16(b[10:], s.bucketN)
	putF32(b[12:], s.short)
	putF32(b[16:], s.long)
	putF32(b[20:], s.exposure)
	putF32(b[24:], s.failShort)
	putF32(b[28:], s.failLong)
	putF32(b[32:], s.errShort)
	putF32(b[36:], s.errLong)
	binary.LittleEndian.PutUint16(b[40:], s.runN)
	q := 0.0
	if s.runN > 0 && s.runExpected != 0 { // 0 stores 0: no division (a run that starts at this request)
		q = min(s.runExpected/(float64(s.runN)*runSpan), 1)
	}
	binary.LittleEndian.PutUint16(b[42:], uint16(q*math.MaxUint16+0.5))
	putF32(b[44:], s.overMedium)
	putF32(b[48:], s.logMid)
	putF32(b[52:], s.bucket)
	if s.coreRead {
		s.core.MarshalBinary(b[coreAt:coreAt:StateSize])
	}
	putBurst(b[burstAt:], s.burstShort, s.burstRun, s.burstLen)
	putBurst(b[peakAt:], s.peakShort, s.peakRun, s.peakLen)
	binary.LittleEndian.PutUint32(b[last5xxAt:], s.last5xx)
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

// expect returns the count a baseline count long predicts for a window of tau
// seconds, at least FloorExpected.
func (s *state) expect(long, tau float64) float64 {
	return max(long*tau/s.exposure*max(s.ramp, 1), FloorExpected)
}

// rate returns the baseline request rate per second, at least
// FloorExpected per TauShort.
func (s *state) rate() float64 {
	r := 0.0
	if s.exposure > 0 {
		r = s.long / s.exposure
	}
	return max(r, FloorExpected/TauShort)
}

// extendRun adds a request dt seconds after the previous one to the run, at
// the baseline rate, and reports whether the request made the run's evidence
// grow (it came sooner than ln(RunRatio)/(RunRatio-1) mean gaps): only such a
// request is judged on the run, so the requests at a normal pace after a
// flood do not inherit its finding while the run winds down.
func (s *state) extendRun(dt, rate float64) (grew bool) {
	s.runExpected += rate * dt
	if s.runN == 0 || float64(s.runN)*runStep <= (RunRatio-1)*s.runExpected {
		s.runN, s.runExpected = 0, 0 // the run starts again at this request
	}
	if s.runN >= MaxRun {
		s.runN, s.runExpected = s.runN/2, s.runExpected/2
	}
	if span := rate * TauMedium; s.runExpected > span {
		// Only the last TauMedium seconds of the baseline's expectation: the
		// same ratio over a shorter span.
		s.runN = uint16(float64(s.runN)*span/s.runExpected + 0.5)
		s.runExpected = span
	}
	s.runN++
	return runStep > (RunRatio-1)*rate*dt
}

// meanGap returns the baseline's mean gap between requests, in seconds, or 0
// without a baseline.
func (s *state) meanGap() float64 {
	if s.long > 0 {
		return s.exposure / s.long
	}
	return 0
}

// Detector is the volume detector. The zero value is ready to use.
type Detector struct{}

// Doc is the catalog paragraph.
const Doc = "Request, auth-failure (auth failed or HTTP 401), error (other 4xx/5xx) and bytes-out (response size) rates of a device " +
	"against its own baseline, and the gaps it leaves. Each rate is a time-decayed count over a short window (tau 30 s) " +
	"compared with the count the device's long-term rate (tau 1 h, long silences " +
	"capped) predicts for that window, scored with the Poisson right tail. Fires when the tail probability is below " +
	"1e-6, the count is at least 4x expected and at least 8 requests / 6 failures / 6 errors; score 0.5 at 1e-6, " +
	"rising to 1. Observed is the window's count (including this event), Expected the baseline-expected count in " +
	"the same window, times the class's daily ramp (how much busier its learned 24-hour cycle usually is now than " +
	"an hour ago, at least 1, a conservative bound: a class's usual morning is no flood; the cycle never lowers an " +
	"expectation). Flagged requests are learned as if they came at twice the baseline rate at most, so a flood " +
	"moves the baseline little and a lasting change of level stops being flagged within about an hour. " +
	"Requests are also followed as a run (a Poisson CUSUM: recent requests arriving faster than " +
	"about 4x the baseline rate, at most the last 5 minutes of expectation), so that a flood slow in absolute terms " +
	"(a meter sending every 13 s instead of every 5 min) is flagged after 8 requests: a rate_spike when the run " +
	"has at least 8 requests, 16x its expected count and a Poisson tail (of the requests after its first) below " +
	"1e-6, judged on requests that extend it while the short window is 4x expected (Observed: the run's requests, " +
	"Expected: the baseline's count over its span); requests of a run already at 1e-3 are learned as flagged ones. " +
	"A device's own burstiness: when a burst episode (events whose short window or run holds at least 8 requests, " +
	"not while requests fail or are judged the fleet's) ends, its largest short-window and run ratios and its length in events are " +
	"remembered (the larger of them and the memory, forgotten with tau 24 h); a rate spike then needs more than " +
	"1.5x the remembered ratio (a short window: the larger of the short and the run ratios, as a run at R times the baseline fills a short window R times over) while the open episode is at most 3x the remembered length, so a camera's clips or " +
	"a vehicle's trips alert at most the first time and a flood, longer than any session, is still flagged; a device " +
	"with no memory, or a smaller one, takes its class's (among the sampled devices that remember an episode or have one " +
	"open, when at least 3 and a quarter of them do: the upper quartile of their ratios, the median length); a device with no memory of its own, " +
	"or one whose 1.5x margin is still below its class's run ratio (a young memory), leaning on its class's also needs its run's Poisson tail below 1e-6 against a class session (the class's run ratio times " +
	"the expected count), as a handful of requests does not know its ratio; a device with no memory of its own keeps that test however long " +
	"its burst lasts (its class's episodes are open or cut short: no measure of a session's length). An auth-failure or error burst " +
	"is reported in preference to the rate spike it also causes. A backend incident is not the device's: an error burst " +
	"on a 5xx, or a rate spike of which a quarter of the short window (or 2 requests) failed (retries), while at least " +
	"4 other devices of its class, and a tenth of those seen, were answered with a 5xx in the current or previous " +
	"minute (the fleet view's class failure sketches), or as many of the fleet's (one device in 16 sampled, in a class slot of its own: a small class shows a fleet-wide incident late), and, for 10 minutes after the class's last such minute, a rate " +
	"spike of a device that itself got a 5xx in those 10 minutes (the catch-up of its retries once the backend is back), " +
	"is fleet_errors instead, score 0.15 (Observed and Expected the " +
	"burst's): recorded, never an alert alone, learned as a flagged burst, restarting the run, never remembered as a " +
	"burst of the device's. Only as far as the failure explains it: retries resend what failed, so the short window " +
	"may hold at most its failed requests plus the device's own (its usual burst: 1.5x the largest remembered ratio, " +
	"its own or its class's, or 8 requests); a catch-up at most 21 times its expected count (10 minutes held back), " +
	"plus its usual burst once the class is served again. A flood that meets or makes a class failure is the " +
	"device's. Bytes out are heavy-tailed (a firmware download " +
	"next to 40-byte acks), so they are judged against the device's typical (median, tracked in log units) response " +
	"size, and one large response is never a finding: at least 6 responses over 16x the typical size (and 256 bytes) " +
	"in the 5-minute window, at a normal request rate, are a bytes_out_spike (Observed: that count, Expected: 0.1); the " +
	"mean response size of each closed 5-minute bucket (each response capped at 2x the typical size) feeds the volume " +
	"core (the model of iotwatch eval nab, in log units: a 5% floor; daily harmonic, robust learning, a 1 h drift " +
	"window, right tail only), and a calibrated drift surprise of 6 decades on a bucket itself above its baseline " +
	"(1 decade) is a bytes_out_drift (Observed: the bucket's mean response size, Expected: the baseline's), for " +
	"responses growing gradually. Silence: when a device comes back after at least 30 min and a gap whose Poisson " +
	"probability exp(-gap/mean gap) is below 1e-6, silence (Observed: the gap in seconds, Expected: the mean gap), " +
	"score 0.1 at 30 min to 0.15 from 8 h on: a device off overnight makes such gaps, so it never alerts alone; it " +
	"is reported when the gap reaches that threshold by the worker's event-time sweep (every minute of event time; " +
	"Observed: the gap so far), and again on the device's next event. No findings until the device has 20 events and 10 minutes " +
	"of history (or, when the fleet view knows its class's rate, the median rate of 16 sampled devices of the class, " +
	"rate spikes against that rate at 8x and 1e-10); " +
	"scores stay at most 0.85 (below blocking) until it has 100 events and about 50 minutes of history, and until " +
	"then a short-window rate spike must also pass the cold bounds against the larger of its baseline's and its " +
	"class's expectation, and a run that began before its 20th event, or whose burst episode opened within 8 " +
	"events of it (a long first trip whose run keeps only its last 5 minutes), is not judged until it graduates or it or " +
	"its class remembers a session (the baseline was built from that run's own first requests: a vehicle's first " +
	"trip is no flood). A class whose devices remember too few bursts borrows its model's burstiness (the class " +
	"across tenants). A warm " +
	"device without a finding returns a finding with no reason whose Observed and Expected are the short request " +
	"window's (the expected band of plots)."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Reasons: []string{ReasonRateSpike, ReasonAuthFailures, ReasonErrorBurst,
			ReasonBytesOutSpike, ReasonBytesOutDrift, ReasonSilence, ReasonFleetErrors},
		Version: 2, // 2: the latest 5xx's time at 100:104
		New:     func() detectors.Detector { return &Detector{} },
		Stats:   func(classes *detectors.ClassTable) detectors.ClassStats { return NewStats(classes) },
	})
}

// Rearm implements detectors.Rearmer: the short windows (requests, auth
// failures, errors) restart at the counts the device's baseline predicts for
// them, the run of fast requests and the window of oversized responses
// restart empty. The baselines, the bytes-out model and the silence clock
// are kept.
func (Detector) Rearm(b []byte) {
	if len(b) < StateSize {
		return
	}
	var s state
	s.load(b)
	if s.n == 0 {
		return // no history: nothing to forget, and zeros stay zeros
	}
	s.short, s.failShort, s.errShort = 0, 0, 0
	if s.exposure > 0 {
		s.short = s.long * TauShort / s.exposure
		s.failShort = s.failLong * TauShort / s.exposure
		s.errShort = s.errLong * TauShort / s.exposure
	}
	s.runN, s.runExpected = 0, 0
	s.overMedium = 0
	s.store(b)
}

// Observe implements detectors.Detector.
func (*Detector) Observe(ev *schemas.Event, b []byte, fleet detectors.Fleet) schemas.Finding {
	if len(b) < StateSize {
		return schemas.Finding{}
	}
	var s state
	s.load(b)

	// Seconds since the previous event; 0 for the first one and for an event
	// older than the last one (late events are counted, not time-travelled).
	first, prev := s.n == 0, s.last
	dt := detectors.Advance(&s.last, first, ev.Time)

	fail := 0.0
	if ev.Auth == schemas.AuthFailed || ev.Status == 401 {
		fail = 1
	}
	errs := 0.0
	if fail == 0 && ev.Status >= 400 && ev.Status < 600 {
		errs = 1
	}
	warm := s.n >= WarmEvents && s.exposure >= WarmExposure

	// The response against the device's typical size (before this event
	// moves it); a large one counts in the drift bucket at the cap.
	bytes := min(float64(ev.BytesOut), maxCount)
	lb, sent := detectors.Log1pCount(bytes), bytes // lb is log(1 + sent), before the cap (sent is an integer)
	if first {
		s.logMid = lb
	}
	over := 0.0
	if bytes >= MinOversizeBytes && lb > s.logMid+logOversize {
		over = 1
	}
	if lb > s.logMid+logCap {
		bytes = math.Expm1(s.logMid + logCap)
	}

	// The gap before this event, judged against the baseline before it moves.
	// (The sweep's threshold, silence.go.)
	isSilence, meanGap := false, 0.0
	if warm && dt >= MinSilence {
		meanGap = s.meanGap()
		isSilence = silent(dt, meanGap)
	}

	// A new bucket closes the previous one: its mean response size steps the
	// Core. The mean, not the total, so that the device's daily cycle of
	// request rates (the rate channels' business) does not look like a drift;
	// in log units (y, the root of the value the Core models: StepScore
	// takes the root), so that sizes drift by ratios whatever the device's
	// typical size.
	// Buckets without bytes (a device that sends none, a silence) are
	// skipped; silence has its own finding.
	point, driftObserved, corePred := 0.0, 0.0, 0.0
	var driftScore float32 // SurpriseScore of the Core's drift against MinDriftSurprise
	if dt > 0 && ev.Time/BucketNs != prev/BucketNs {
		if s.bucket > 0 && s.bucketN > 0 {
			driftObserved = s.bucket // its mean: itself for one response, without a division
			if s.bucketN != 1 {
				driftObserved = s.bucket / float64(s.bucketN)
			}
			// log(1 + the bucket's mean size): this response's, already
			// computed, when they are equal (a device whose responses
			// have one size, one per bucket or many).
			lm := lb
			if driftObserved != sent {
				lm = math.Log1p(driftObserved)
			}
			y := LogScale * lm
			s.core.UnmarshalBinary(b[coreAt:])
			s.coreRead = true
			point, driftScore, corePred = s.core.StepScore(&DetectorCoreParams, (prev/BucketNs+1)*BucketNs, y, MinDriftSurprise)
		}
		s.bucket, s.bucketN = 0, 0
	}
	if s.bucketN < math.MaxUint16 {
		s.bucket = min(s.bucket+bytes, maxCount)
		s.bucketN++
	}

	ds := detectors.Decay(dt / TauShort)
	s.short = s.short*ds + 1
	s.failShort = s.failShort*ds + fail
	s.errShort = s.errShort*ds + errs
	if s.overMedium != 0 {
		s.overMedium = s.overMedium*detectors.Decay(dt/TauMedium) + over
	} else {
		s.overMedium = over // what 0 decays to, plus over: no Exp for a device without oversized responses
	}

	// A silence adds at most a few typical gaps of exposure.
	exposed := dt
	if dt > minGapCap {
		exposed = min(dt, max(minGapCap, gapCapFactor*s.meanGap()))
	}
	dl := detectors.Decay(exposed / TauLong)
	s.long *= dl
	s.failLong *= dl
	s.errLong *= dl
	s.exposure = s.exposure*dl + TauLong*(1-dl)
	// The run, against the baseline before this request is learned.
	rate := s.rate()
	grew := s.extendRun(dt, rate)
	runObserved, runExpected := float64(s.runN), max(s.runExpected, rate*TauShort)
	runZ := -1.0 // not computed yet: it costs a Lgamma, needed only when the short window is quiet

	reason, observed, expected := schemas.ReasonNone, 0.0, 0.0
	var score float32
	switch {
	case warm:
		reason, observed, expected, score = s.judgeWarm(fail, errs, over)
		// A count finding is judged again with the class's daily ramp, which
		// only raises expectations: an event no finding without it needs none.
		if score > 0 && reason != ReasonBytesOutSpike && s.rampUp(ev, fleet) {
			reason, observed, expected, score = s.judgeWarm(fail, errs, over)
		}
		// A rate spike is judged again with the class's burstiness, which
		// only raises the ratio it needs (classburst.go).
		if score > 0 && reason == ReasonRateSpike && s.classBurstUp(ev, fleet) {
			reason, observed, expected, score = s.judgeWarm(fail, errs, over)
		}
		// The run, for floods too slow to fill the short window, while the
		// short window still runs high.
		if score == 0 && grew && s.runN >= MinSpike && s.short >= MinRatio*s.expect(s.long, TauShort) {
			// A surprise scores (above 0) from MinSurprise on; the score
			// itself (an Exp2) is computed only for the finding kept.
			runZ = runSurprise(runObserved, runExpected, s.runRatio())
			found := runZ >= MinSurprise
			if found && s.rampUp(ev, fleet) {
				runExpected *= s.ramp
				runZ = runSurprise(runObserved, runExpected, s.runRatio())
				found = runZ >= MinSurprise
			}
			if found && s.classBurstUp(ev, fleet) {
				runZ = runSurprise(runObserved, runExpected, s.runRatio())
				found = runZ >= MinSurprise
			}
			// A device with no session of its own leaning on its class's:
			// the run must be improbable as a class session too
			// (classSessionRun).
			sessionZ, asSession := 0.0, false
			if found {
				if rs := s.classSessionRun(); rs > 0 {
					sessionZ, asSession = runSurprise(runObserved, rs*runExpected, 0), true
					found = sessionZ >= MinSurprise
				}
			}
			if found && s.sessionKnown() {
				r := detectors.SurpriseScore(runZ, MinSurprise)
				if asSession {
					r = min(r, detectors.SurpriseScore(sessionZ, MinSurprise))
				}
				reason, observed, expected, score = ReasonRateSpike, runObserved, runExpected, r
			}
		}
		// A young baseline (not graduated) has seen few of the device's
		// sessions: its short-window rate spike is also judged as a cold
		// device's is, against the larger of its own and its class's
		// typical rate with the cold bounds, and scores the lower.
		if score > 0 && reason == ReasonRateSpike && observed == s.short && !s.graduated() {
			if rate := classRate(fleet, ev.ClassKey); rate > 0 && !math.IsInf(rate, 1) {
				e := max(expected, rate*TauShort*max(s.ramp, 1), FloorExpected)
				score = min(score, judgeWith(observed, e, MinSpike, max(ColdWiden*MinRatio, s.shortRatio()), ColdSurprise))
			}
		}
		if score == 0 && driftScore > 0 && point >= MinDriftPoint {
			// Back from the Core's units to bytes.
			reason, observed, expected = ReasonBytesOutDrift, driftObserved, math.Expm1(corePred/LogScale)
			score = driftScore
		}
		if score == 0 && isSilence {
			f := silenceFinding(dt, meanGap)
			reason, observed, expected, score = f.Reason, f.Observed, f.Expected, f.Score
		}
	case !first:
		// A cold device against its class's typical rate, with wider bounds.
		if rate := classRate(fleet, ev.ClassKey); rate > 0 && !math.IsInf(rate, 1) {
			reason, observed, expected = ReasonRateSpike, s.short, max(rate*TauShort, FloorExpected)
			score = judgeWith(observed, expected, MinSpike, ColdWiden*MinRatio, ColdSurprise)
			if score > 0 && s.classBurstUp(ev, fleet) {
				score = judgeWith(observed, expected, MinSpike, max(ColdWiden*MinRatio, s.shortRatio()), ColdSurprise)
			}
		}
	}
	// An error burst, or the rate spike of a device's retries, while its
	// class is failing at once (a backend incident) is the fleet's, not the
	// device's (classerrors.go).
	// Only as far as retries go: a device resends what failed, so its
	// requests beyond its usual burst are at most its failures (retriesOnly);
	// a flood that met a class failure (or made it) sends far more than it
	// failed and stays the device's.
	if score > 0 && s.retrying(ev, reason) && classFailing(fleet, ev) && s.retriesOnly(ev, fleet) {
		reason, score = ReasonFleetErrors, FleetScore
	}
	// The catch-up of a device the failure hit, once the backend is back:
	// its queued retries and held-back requests at once, with no error
	// left in its short window (FleetRecoverNs).
	// Bounded by what the device could have held back: its expected rate
	// over the whole recovery span, sent at once (catchUpRatio); a flood
	// that made the device fail (or met a class failure by chance) is far
	// above that and stays a rate spike. Once its class is served again, a
	// device that works in sessions also sends the session it held back:
	// its usual burst (usualBurst) is added.
	if score > 0 && reason == ReasonRateSpike && s.failedWithin(ev.Time, FleetRecoverNs) && classRecovering(fleet, ev) &&
		s.catchUpBound(ev, fleet, observed, expected, observed != s.short) {
		reason, score = ReasonFleetErrors, FleetScore
	}
	if reason == ReasonFleetErrors {
		// Requests explained as the fleet's are no evidence of the
		// device's own: its run starts again after them, so that the
		// retries of an incident do not make a rate spike of the session
		// after it.
		s.runN, s.runExpected = 0, 0
	}
	if ev.Status >= 500 && ev.Status < 600 && ev.Time > 0 {
		s.last5xx = uint32(min(ev.Time/1e9, math.MaxUint32))
	}
	if score > 0 && !s.graduated() {
		score = min(score, ColdMaxScore) // not graduated: alert, never block
	}
	if score == 0 {
		// No finding; a warm device still reports its short request window
		// and the baseline's expectation (judgeWarm's, the plots' band;
		// dropped downstream).
		reason = schemas.ReasonNone
		if !warm {
			observed, expected = 0, 0
		}
	}
	f := schemas.Finding{Detector: Name, Reason: reason, Score: score, Observed: observed, Expected: expected}
	// Learn; what was flagged, robustly. The request baselines learn fully
	// from all but request-count findings (an oversized response came at a
	// normal rate; a silence and a bucket's drift are about earlier events),
	// and from those and a request of a suspect run (well above the
	// baseline, not yet flagged) at most LearnCap times their rate; the size
	// tracker learns from all but oversized responses.
	flagged := reason == ReasonRateSpike || reason == ReasonAuthFailures || reason == ReasonErrorBurst ||
		reason == ReasonFleetErrors
	if !flagged && runZ < 0 {
		runZ = runSurprise(runObserved, runExpected, s.runRatio())
	}
	if warm {
		s.learnBurst(dt, runObserved, runExpected, reason == ReasonFleetErrors)
	}
	learn := 1.0
	if flagged || runZ >= SuspectSurprise {
		// Robust learning: a flagged or suspect request counts as if it had
		// come at LearnCap times the baseline rate at most, so that a flood
		// moves the baseline by little and a lasting change of level (a
		// firmware reporting ten times as often) is learned within about an
		// hour instead of being flagged for ever.
		learn = min(1, LearnCap*rate*dt)
	}
	s.long += learn
	s.failLong += learn * fail
	s.errLong += learn * errs
	if reason != ReasonBytesOutSpike {
		if lb > s.logMid {
			s.logMid = min(s.logMid+MidStep, lb)
		} else {
			s.logMid = max(s.logMid-MidStep, lb)
		}
	}
	if s.n < math.MaxUint16 {
		s.n++
	}
	s.store(b)
	return f
}

// rampUp reads the class's daily ramp from the fleet view into s.ramp
// (once per event) and reports whether it raises expectations.
func (s *state) rampUp(ev *schemas.Event, fleet detectors.Fleet) bool {
	if s.ramp == 0 {
		s.ramp = 1
		switch cr := fleet.(type) {
		case *Stats: // the detector's own statistics: no interface lookup
			s.ramp = cr.ClassRamp(ev.ClassKey, ev.Time, TauLong)
		case ClassRamper:
			s.ramp = cr.ClassRamp(ev.ClassKey, ev.Time, TauLong)
		}
	}
	return s.ramp > 1
}

// retrying reports whether a finding of reason could be a class failure's:
// an error burst on a 5xx, or a rate spike of which at least FleetRetryShare
// of the short window, or FleetRetryMin requests, failed (the retries of
// failed requests, and those that succeed once the backend is back).
func (s *state) retrying(ev *schemas.Event, reason string) bool {
	switch reason {
	case ReasonErrorBurst:
		return ev.Status >= 500 && ev.Status < 600
	case ReasonRateSpike:
		return s.errShort+s.failShort >= min(FleetRetryShare*s.short, FleetRetryMin)
	}
	return false
}

// usualBurst returns how many times its baseline's expectation the device
// (or its class, once read: classBurstUp) is known to send in a burst of
// its own: 1 for none, else BurstMargin times the largest remembered ratio
// of a short window, or of a run (run).
func (s *state) usualBurst(run bool) float64 {
	if run {
		return max(1, BurstMargin*max(s.burstRun, s.classRun))
	}
	return max(1, BurstMargin*max(s.burstShort, s.classShort))
}

// catchUpBound reports whether observed, a rate spike (of the short window,
// or of a run) against expected, is within what a class failure's catch-up
// can send: catchUpRatio times expected, and once the class is no longer
// failing, plus the device's usual burst beyond its baseline (usualBurst,
// its class's read only when its own is not enough).
func (s *state) catchUpBound(ev *schemas.Event, fleet detectors.Fleet, observed, expected float64, run bool) bool {
	if observed <= catchUpRatio*expected {
		return true
	}
	if classFailing(fleet, ev) {
		return false
	}
	if observed <= (catchUpRatio-1+s.usualBurst(run))*expected {
		return true
	}
	return s.classBurstUp(ev, fleet) && observed <= (catchUpRatio-1+s.usualBurst(run))*expected
}

// retriesOnly reports whether the device's short window is no more than
// the requests in it that failed plus its own: each failure is resent once
// at most, so retries add at most as many requests as failed, and its own
// are its usual burst (usualBurst, its class's read only when its own is
// not enough), or MinSpike requests (the fewest a rate spike has) when that
// is more. A flood that meets (or makes) a class failure sends far more
// than it failed.
func (s *state) retriesOnly(ev *schemas.Event, fleet detectors.Fleet) bool {
	e, failed := s.expect(s.long, TauShort), s.errShort+s.failShort
	if s.short <= max(s.usualBurst(false)*e, MinSpike)+failed {
		return true
	}
	return s.classBurstUp(ev, fleet) && s.short <= max(s.usualBurst(false)*e, MinSpike)+failed
}

// sessionKnown reports whether a run may be judged: the device has
// graduated, it or its class (read by classBurstUp) remembers a session, or
// its burst began after its warm-up. A young device whose burst began before
// it was warm is judged on a baseline built from that burst's own first
// requests and the quiet before it: it cannot tell a vehicle's first trip
// from a slow flood, nor can a class none of whose sampled devices has shown
// a session yet. A flood fast enough to fill the short window is still judged
// there, against the class's rate.
//
// The burst began before the warm-up when its run did (fewer than
// WarmEvents requests before the run), or when its open episode opened
// within MinSpike requests of the warm-up (an episode is followed from the
// warm-up on and opens once its short window or run holds MinSpike
// requests, so one opened that soon was under way before). The run alone
// does not tell: it keeps only its last TauMedium seconds of expectation
// (extendRun), so during a long first trip its count shrinks and its start
// seems to move past the warm-up while the trip goes on.
func (s *state) sessionKnown() bool {
	if s.graduated() || s.burstLen > 0 || s.classLen > 0 {
		return true
	}
	episodeBefore := s.peakLen > 0 && int(s.n) < WarmEvents+MinSpike+int(s.peakLen)
	return int(s.n) >= WarmEvents+int(s.runN) && !episodeBefore
}

// graduated reports whether the device's baseline has GradEvents and
// GradExposure of history.
func (s *state) graduated() bool { return s.n >= GradEvents && s.exposure >= GradExposure }

// failedWithin reports whether the device got a 5xx within window
// nanoseconds before now.
func (s *state) failedWithin(now, window int64) bool {
	return s.last5xx > 0 && now/1e9-int64(s.last5xx) <= window/1e9
}

// classRate returns the class's typical rate from the fleet view, 0 when it
// does not know it.
func classRate(fleet detectors.Fleet, class uint64) float64 {
	switch cr := fleet.(type) {
	case *Stats: // the detector's own statistics: no interface lookup
		return cr.ClassRate(class)
	case ClassRater:
		return cr.ClassRate(class)
	}
	return 0
}

// learnBurst follows the device's burst episodes after an event dt seconds
// after the previous one, with the expectations it was judged against
// (before the request is learned in the baseline): the memory is forgotten
// with TauBurst; while the short window or the run holds at least MinSpike
// requests, the episode keeps its largest ratios and counts its events (not
// while requests fail: retries); the first event after it moves them into
// the memory. Neither do an episode's events judged the fleet's (fleet).
func (s *state) learnBurst(dt, runObserved, runExpected float64, fleet bool) {
	if s.burstLen > 0 {
		d := detectors.Decay(dt / TauBurst)
		s.burstShort *= d
		s.burstRun *= d
		s.burstLen *= d
	}
	rs, rr := 0.0, 0.0
	if s.short >= MinSpike {
		rs = s.short / s.expect(s.long, TauShort)
	}
	if runObserved >= MinSpike && runExpected > 0 {
		rr = runObserved / runExpected
	}
	if rs > 0 || rr > 0 {
		// The retries of failed requests, and a class failure's catch-up
		// (fleet_errors), are no session of the device.
		if s.errShort+s.failShort < 1 && !fleet {
			s.peakShort, s.peakRun = max(s.peakShort, rs), max(s.peakRun, rr)
			s.peakLen++
		}
		return
	}
	if s.peakLen > 0 {
		s.burstShort, s.burstRun = max(s.burstShort, s.peakShort), max(s.burstRun, s.peakRun)
		s.burstLen = max(s.burstLen, s.peakLen)
	}
	s.peakShort, s.peakRun, s.peakLen = 0, 0, 0
}

// runSurprise returns the surprise of a run of observed requests where
// expected were expected, 0 below minRatio times expected. The run's first
// request starts its clock: the requests after it are the evidence.
func runSurprise(observed, expected, minRatio float64) float64 {
	if observed < 2 || observed < minRatio*expected {
		return 0
	}
	return detectors.PoissonSurprise(observed-1, expected)
}

// judgeWarm judges the short and medium windows of a warm device: auth
// failures and errors first (a burst of them also raises the rate), then the
// request rate, then oversized responses at a normal rate. With score 0 it
// returns the short request window and its expected count.
func (s *state) judgeWarm(fail, errs, over float64) (reason string, observed, expected float64, score float32) {
	switch {
	case fail > 0:
		reason, observed, expected = ReasonAuthFailures, s.failShort, s.expect(s.failLong, TauShort)
		score = judge(observed, expected, MinFailures)
	case errs > 0:
		reason, observed, expected = ReasonErrorBurst, s.errShort, s.expect(s.errLong, TauShort)
		score = judge(observed, expected, MinErrors)
	}
	if score > 0 {
		return reason, observed, expected, score
	}
	reason, observed, expected = ReasonRateSpike, s.short, s.expect(s.long, TauShort)
	score = judgeWith(observed, expected, MinSpike, s.shortRatio(), MinSurprise)
	if score > 0 || over == 0 {
		return reason, observed, expected, score
	}
	// Oversized responses, judged on events that are themselves oversized so
	// that the responses after a burst do not inherit its finding.
	if o := judge(s.overMedium, FloorExpected, MinOversized); o > 0 {
		return ReasonBytesOutSpike, s.overMedium, FloorExpected, o
	}
	return reason, observed, expected, 0
}

// silenceScore grows with the gap, not its improbability (every long gap of a
// busy device is improbable): SilenceMinScore at MinSilence, SilenceMaxScore
// at 16 times that (8 h), halfway at 4 times (2 h).
func silenceScore(gap float64) float32 {
	x := min(math.Log2(gap/MinSilence)/4, 1)
	return float32(SilenceMinScore + (SilenceMaxScore-SilenceMinScore)*max(x, 0))
}

// judge returns the score of observed against expected: 0 unless observed is
// a burst of at least minCount and MinRatio times expected.
func judge(observed, expected, minCount float64) float32 {
	return judgeWith(observed, expected, minCount, MinRatio, MinSurprise)
}

// judgeWith is judge with the ratio and surprise thresholds given.
func judgeWith(observed, expected, minCount, minRatio, minSurprise float64) float32 {
	if observed < minCount || observed < minRatio*expected {
		return 0
	}
	return detectors.SurpriseScore(detectors.PoissonSurprise(observed, expected), minSurprise)
}
