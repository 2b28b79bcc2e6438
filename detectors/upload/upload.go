// Package upload judges a device's upload volume, its request sizes
// (schemas.Event.BytesIn), against the device's own band and its class's:
// bursts of bytes in within minutes, and request sizes that grow and stay up.
//
// Uploads are heavy-tailed and bursty by nature: a camera sends 90-byte pings
// and, in a motion session, clips of megabytes; a meter batches its readings.
// Neither a mean nor a variance describes them, so the detector keeps, per
// device:
//
//   - the bytes in over the last few minutes, a time-decayed sum (time
//     constant TauWindow, 5 minutes: "uploaded 48 MB in 5 min");
//   - its band, the most it usually uploads in as long: a decayed maximum of
//     that window in log units, which forgets by half every PeakHalfLife
//     (6 h), so that a camera's clip sessions of the afternoon still count in
//     the evening;
//   - its typical request size, a log-domain tracker of its median (MidStep
//     towards each request that carries bytes in);
//   - the mean request size of each 5-minute bucket: its band (a tracker of
//     the 95th percentile of its log), an EWMA of its log and of its
//     absolute deviation (the device's own burstiness), and a one-sided
//     CUSUM of its excess over the band.
//
// A burst (ReasonBytesInBurst) is an oversized request (OversizeFactor times
// the typical size) that brings the window to BurstFactor times the band,
// and at least BurstFactor times MinExpectedBytes. Only oversized requests
// are judged, so the device's ordinary requests after an upload do not
// inherit its finding while the window decays. One request can be a burst (a
// thermostat uploading 600 KB where it sends 500 bytes), but a camera's clip
// is not: its band holds its clip sessions.
//
// Growth (ReasonBytesInGrowth) is the CUSUM of closed buckets' excess over
// the larger of the device's bucket band and its class's (in units of the
// device's absolute deviation, at least DevFloor, each capped at GrowthZCap
// so that one large bucket cannot make it alone) minus GrowthK, reaching
// GrowthH, reported on a bucket itself at least GrowthMinZ deviations above
// the band. The band moves up by at most BandUp per bucket (BandSuspect
// while the CUSUM is half-way), so growth faster than that stays above it. The mean size per request, not
// the total, so that the daily cycle of request rates (the volume detector's
// business) is no growth.
//
// Warm-up and class prior: a device's own band is used once it has
// WarmBuckets (6) active buckets of history, so within its first half hour
// of activity. Before, and at all times as a floor, a fleet view that
// implements ClassBander (Stats: the upper quartile of the bands of a
// sample of the class's warm devices) gives its class's band, so that a new device is judged from
// its first requests, and a device is never flagged for what its class
// usually does. Burst scores of a device with fewer than GradBuckets active
// buckets (judged on its class's band alone, or on a young band of its
// own) are capped at ColdMaxScore: alert, never block. Until then, too, a
// request the size its class's devices send with the same command (Stats
// keeps, per class and command, the range of log(1 + bytes in):
// detectors.ParamTable) is not judged for a burst (classSized): a young
// band has not seen the device's sessions.
//
// What is flagged is learned robustly: a burst raises the band by at most
// PeakLearnStep per request and does not move the typical size, so an
// exfiltration stays a burst for its length while a lasting change of level
// is learned within dozens of requests. The requests after an upload,
// though, learn the decaying window, upload included (see Observe): a
// repeat within hours is judged against the first.
package upload

import (
	"encoding/binary"
	"math"
	"math/rand/v2"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Parameters. They are constants in this first version; Doc documents them.
const (
	// TauWindow is the time constant of the window of bytes in, in seconds.
	TauWindow = 300.0
	// BurstFactor times the band (at least MinExpectedBytes) is the smallest
	// window that can be a burst; score 0.5 there, 0.75 at twice, 0.95 at
	// ten times.
	BurstFactor = 8.0
	// MinExpectedBytes floors the band: a device uploading a few hundred
	// bytes makes no burst below BurstFactor·MinExpectedBytes (32 KB).
	MinExpectedBytes = 4096.0
	// OversizeFactor times the typical request size makes a request
	// oversized, the only ones judged for a burst.
	OversizeFactor = 8.0
	// MidStep is the step, in natural-log units of bytes, of the tracker of
	// the typical request size.
	MidStep = 0.1
	// PeakHalfLife (seconds) is how fast the band forgets: by half every 6 h.
	PeakHalfLife = 6 * 3600.0
	// PeakLearnStep bounds how much a flagged request raises the band, in
	// natural-log units (10%).
	PeakLearnStep = 0.1
	// WarmBuckets is how many active 5-minute buckets a device needs before
	// its own band and growth are judged.
	WarmBuckets = 6
	// ColdMaxScore caps the score of a young device: one judged on its
	// class's band alone, or with fewer than GradBuckets active buckets (a
	// young band has not seen the device's sessions yet: alert, never
	// block).
	ColdMaxScore = 0.85
	GradBuckets  = 24
	// BucketNs is the length of the growth buckets.
	BucketNs = int64(300e9)
	// GrowthAlpha is the EWMA weight of a bucket in the baseline (about an
	// hour of buckets); the first buckets are averaged (weight 1/(n+2)).
	GrowthAlpha = 1.0 / 12
	// DevInit is the absolute deviation (log units) a baseline starts with,
	// weighing as one bucket; DevFloor is the smallest used (10%).
	DevInit  = 0.5
	DevFloor = 0.1
	// GrowthK is the CUSUM's allowance, GrowthH its threshold and
	// GrowthZCap the cap of one bucket's deviation, in deviations; the sum
	// is capped at 2·GrowthH so that it winds down within an hour.
	GrowthK    = 1.5
	GrowthH    = 12.0
	GrowthZCap = 3.0
	// GrowthMinZ is the smallest excess of the closing bucket itself over
	// the band, in deviations, for a growth finding.
	GrowthMinZ = 1.0
	// BandUp is the step, in natural-log units, of the bucket band, a
	// tracker of the 95th percentile of the buckets' log mean request size
	// (down by BandUp/19); BandSuspect the step of a bucket while the CUSUM
	// is above 0.
	BandUp      = 0.05
	BandSuspect = 0.02
	// maxBytes bounds byte counts read from a record or an event, maxLog
	// its log: larger or non-finite values (a corrupt record) read as 0.
	maxBytes = 1e12
	maxLog   = 27.7
)

var (
	logOversize = math.Log(OversizeFactor)
	peakDecay   = math.Ln2 / PeakHalfLife // log units per second
)

// ClassBander is implemented by a fleet view that knows a class's usual
// upload bands. It is optional: without it, a device is judged on its own
// bands only, after WarmBuckets.
type ClassBander interface {
	// ClassBands returns the bands that a device of the class usually
	// reaches, 0 when unknown: window, log(1 + bytes in over TauWindow), and
	// bucket, log(1 + a 5-minute bucket's mean request size).
	ClassBands(class uint64) (window, bucket float64)
}

// StateSize is the size of the per-device record.
const StateSize = 40

// Record layout, little-endian:
//
//	0:8   last event time, Unix ns (int64)
//	8:10  events seen, saturating (uint16)
//	10:12 closed active buckets, saturating (uint16)
//	12:14 requests with bytes in in the open bucket, saturating (uint16)
//	14:16 bucket band: the 95th percentile of log(1 + a bucket's mean request size), tracked, in 1/2048 (uint16)
//	16:20 window of bytes in, decayed with TauWindow (float32)
//	20:24 band: decayed maximum of log(1 + window) (float32)
//	24:28 log(1 + typical request size), tracked (float32)
//	28:32 bytes in of the open bucket (float32)
//	32:34 growth baseline: mean log(1 + bucket's mean request size), in 1/2048 (uint16)
//	34:36 growth baseline: its absolute deviation, in 1/2048 (uint16)
//	36:40 growth CUSUM, in deviations (float32)
type state struct {
	last        int64
	n, nb, reqs uint16
	win         float64
	peak        float64
	mid         float64
	bucket      float64
	mean, dev   float64
	bmax        float64
	cusum       float64
}

// fixScale is the resolution of the growth baseline's fixed-point fields.
const fixScale = 2048.0

func (s *state) load(b []byte) {
	_ = b[StateSize-1]
	s.last = int64(binary.LittleEndian.Uint64(b[0:]))
	s.n = binary.LittleEndian.Uint16(b[8:])
	s.nb = binary.LittleEndian.Uint16(b[10:])
	s.reqs = binary.LittleEndian.Uint16(b[12:])
	s.win = f32(b[16:], maxBytes)
	s.peak = f32(b[20:], maxLog)
	s.mid = f32(b[24:], maxLog)
	s.bucket = f32(b[28:], maxBytes)
	s.mean = float64(binary.LittleEndian.Uint16(b[32:])) / fixScale
	s.dev = float64(binary.LittleEndian.Uint16(b[34:])) / fixScale
	s.bmax = float64(binary.LittleEndian.Uint16(b[14:])) / fixScale
	s.cusum = f32(b[36:], 2*GrowthH)
}

func (s *state) store(b []byte) {
	_ = b[StateSize-1]
	binary.LittleEndian.PutUint64(b[0:], uint64(s.last))
	binary.LittleEndian.PutUint16(b[8:], s.n)
	binary.LittleEndian.PutUint16(b[10:], s.nb)
	binary.LittleEndian.PutUint16(b[12:], s.reqs)
	binary.LittleEndian.PutUint16(b[14:], fix(s.bmax))
	putF32(b[16:], s.win)
	putF32(b[20:], s.peak)
	putF32(b[24:], s.mid)
	putF32(b[28:], s.bucket)
	binary.LittleEndian.PutUint16(b[32:], fix(s.mean))
	binary.LittleEndian.PutUint16(b[34:], fix(s.dev))
	putF32(b[36:], s.cusum)
}

// f32 reads a value in [0, hi]; negative, larger or non-finite values read
// as 0.
func f32(b []byte, hi float64) float64 {
	v := float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
	if !(v >= 0 && v <= hi) {
		return 0
	}
	return v
}

func putF32(b []byte, v float64) { binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v))) }

// fix encodes a log value in [0, 32) in 1/fixScale units.
func fix(v float64) uint16 { return uint16(min(max(v, 0)*fixScale+0.5, math.MaxUint16)) }

// Detector is the upload detector. The zero value is ready to use.
type Detector struct{}

// Doc is the catalog paragraph.
const Doc = "Upload volume (bytes in, the request sizes) of a device against its own band and its class's. " +
	"Bytes in are followed as a window decayed over 5 minutes (Observed of a burst: the bytes in of that window), " +
	"against the device's band, the most its window usually reaches (a decayed maximum that forgets by half every " +
	"6 h, so a camera's clip sessions count as its normal), and against its class's band (the upper quartile of the bands of 16 " +
	"sampled warm devices of the class): Expected is the larger of the two, at least 4 KB. A request more than 8x " +
	"the device's typical (median, tracked in log units) request size that brings the window to 8x Expected is a " +
	"bytes_in_burst, score 0.5 there, 0.75 at 16x, 0.95 at 80x; one request can be one (600 KB where 500 bytes are " +
	"usual), requests of the usual size are never judged, so those after an upload do not inherit its finding. " +
	"Growth: the mean request size of each closed 5-minute bucket, in log units, above the larger of the device's " +
	"bucket band (a tracker of its 95th percentile, up 5% per bucket at most) and its class's, in units of the " +
	"device's absolute deviation around an EWMA (about 1 h; its own burstiness, at least 10%), feeds a one-sided " +
	"CUSUM (allowance 1.5 deviations, a bucket counting at most 3); at 12 deviations, on a bucket itself 1 deviation " +
	"above the band, it is a bytes_in_growth (Observed: the bucket's mean request size, Expected: the band's), " +
	"score 0.5 at 12 rising to 0.75 at 24. Flagged requests raise the band by at most 10% each and do not move " +
	"the typical size; the requests after an upload learn the decaying window, upload included, so a repeat within " +
	"hours is judged against it. Warm-up: the device's own band and growth are judged after 6 active 5-minute buckets; " +
	"before, a device is judged on its class's band alone (when 3 sampled devices of the class are warm), from " +
	"its first request, and not at all in a class not yet known; bursts score at most 0.85 (alert, never block) " +
	"until the device has 24 active 5-minute buckets. Until then, too, a request the size its class's devices send " +
	"with the same command (the class's range of log(1 + bytes in) per command: median and mean absolute deviation, " +
	"judged after 50 requests from 5 devices, within 8 scales; a request more than 4 scales out teaches it nothing) " +
	"is not judged for a burst: a young camera's first clip is what its class uploads with /clips, where the same " +
	"bytes through a command that carries small bodies are not. " +
	"A block rearms the window and the CUSUM."

func init() {
	detectors.Register(detectors.Spec{
		Name:      Name,
		Doc:       Doc,
		StateSize: StateSize,
		Version:   1,
		Reasons:   []string{ReasonBytesInBurst, ReasonBytesInGrowth},
		// Random events mostly carry small bodies: make some uploads.
		Shapes: []detectors.Shape{
			func(rng *rand.Rand, ev *schemas.Event) { ev.BytesIn = uint64(rng.ExpFloat64() * 2e6) },
		},
		New:   func() detectors.Detector { return &Detector{} },
		Stats: func(classes *detectors.ClassTable) detectors.ClassStats { return NewStats(classes) },
	})
}

// Rearm implements detectors.Rearmer: the window of bytes in and the growth
// CUSUM restart empty; the band, the typical size and the growth baseline
// are kept.
func (Detector) Rearm(b []byte) {
	if len(b) < StateSize {
		return
	}
	var s state
	s.load(b)
	if s.n == 0 {
		return // no history: zeros stay zeros
	}
	s.win, s.cusum = 0, 0
	s.store(b)
}

// Observe implements detectors.Detector.
func (*Detector) Observe(ev *schemas.Event, b []byte, fleet detectors.Fleet) schemas.Finding {
	if len(b) < StateSize {
		return schemas.Finding{}
	}
	var s state
	s.load(b)
	first, prev := s.n == 0, s.last
	dt := detectors.Advance(&s.last, first, ev.Time)
	own := s.nb >= WarmBuckets
	var v view // the class's bands, read once if needed

	var f schemas.Finding
	// A new bucket closes the previous one.
	if dt > 0 && ev.Time/BucketNs != prev/BucketNs {
		f = s.closeBucket(v.bands(fleet, ev.ClassKey))
	}

	bytes := min(float64(ev.BytesIn), maxBytes)
	lb := detectors.Log1pCount(bytes) // bytes is an integer (BytesIn capped at maxBytes)
	s.win = s.win*detectors.Decay(dt/TauWindow) + bytes
	if bytes > 0 && s.reqs < math.MaxUint16 {
		s.bucket = min(s.bucket+bytes, maxBytes)
		s.reqs++
	}

	// The burst, on oversized requests, against the band before this one.
	burst := false
	if bytes > 0 && (s.mid == 0 || lb > s.mid+logOversize) && !(s.nb < GradBuckets && classSized(fleet, ev, lb)) {
		band := 0.0
		if own {
			band = s.peakAt(dt)
		}
		classWin, _ := v.bands(fleet, ev.ClassKey)
		band = max(band, classWin)
		if band > 0 || own {
			expected := max(math.Expm1(band), MinExpectedBytes)
			if s.win >= BurstFactor*expected {
				score := float32(1 - 0.5*BurstFactor*expected/s.win)
				if s.nb < GradBuckets {
					score = min(score, ColdMaxScore)
				}
				if score > f.Score {
					f = schemas.Finding{Detector: Name, Reason: ReasonBytesInBurst, Score: score, Observed: s.win, Expected: expected}
				}
				burst = true
			}
		}
	}

	// Learn: the band from the window (a burst by at most PeakLearnStep),
	// the typical size from all but bursts. The device's ordinary requests
	// after an upload learn the window as it decays, upload included: a
	// known limitation (capping them too kept cameras' clip sessions out of
	// their own and their class's bands, and they alerted by the thousand
	// on the field model), so an upload is learned within minutes after it
	// ends and a repeat within hours is judged against it.
	peak, lw := s.peakAt(dt), math.Log1p(s.win)
	if burst {
		lw = min(lw, peak+PeakLearnStep)
	}
	s.peak = min(max(peak, lw), maxLog)
	if bytes > 0 && !burst {
		switch {
		case s.mid == 0:
			s.mid = lb
		case lb > s.mid:
			s.mid = min(s.mid+MidStep, lb)
		default:
			s.mid = max(s.mid-MidStep, lb)
		}
	}
	if s.n < math.MaxUint16 {
		s.n++
	}
	s.store(b)
	return f
}

// classSized reports whether a request of lb, log(1 + bytes in), is the
// size ev's class's devices send with ev's command (a Ready range that
// holds it: see Stats.ClassRequestSize). A young device's band (GradBuckets)
// has not seen its sessions yet, and its class's band is the upper quartile
// of devices about as young in a young class: a camera's first clip, 2 MB
// where its pings were 90 bytes, is what every camera of its class uploads
// with that command, not a burst. An upload through a command that carries
// small bodies (an exfiltration through the device's state reports) is
// far out of that command's range and judged as before.
func classSized(fleet detectors.Fleet, ev *schemas.Event, lb float64) bool {
	st, ok := fleet.(*Stats)
	if !ok || st == nil {
		return false
	}
	r := st.ClassRequestSize(ev.ClassKey, ev.CommandID)
	z, _ := r.Judge(lb)
	return r.Ready() && z == 0
}

// peakAt returns the band decayed over dt seconds.
func (s *state) peakAt(dt float64) float64 { return max(s.peak-dt*peakDecay, 0) }

// closeBucket steps the growth baseline and CUSUM with the open bucket's
// mean request size, and empties it; classBucket is the class's bucket band
// (0: unknown). It returns a growth finding, or none.
func (s *state) closeBucket(_, classBucket float64) schemas.Finding {
	reqs, sum := s.reqs, s.bucket
	s.reqs, s.bucket = 0, 0
	if reqs == 0 || sum <= 0 {
		return schemas.Finding{} // no uploads: nothing to judge
	}
	meanSize := sum / float64(reqs)
	x := math.Log1p(meanSize)
	if s.nb == 0 {
		s.mean, s.dev = x, DevInit
	}
	dev := max(s.dev, DevFloor)
	var f schemas.Finding
	warm := s.nb >= WarmBuckets
	if warm {
		// The excess over the larger of the device's bucket band and its
		// class's, in deviations.
		ref := max(s.bmax, classBucket)
		z := (x - ref) / dev
		s.cusum = min(max(s.cusum+min(z, GrowthZCap)-GrowthK, 0), 2*GrowthH)
		if s.cusum >= GrowthH && z >= GrowthMinZ {
			f = schemas.Finding{Detector: Name, Reason: ReasonBytesInGrowth,
				Score: float32(1 - 0.5*GrowthH/s.cusum), Observed: meanSize, Expected: math.Expm1(ref)}
		}
		// The band tracks the buckets' 95th percentile (up BandUp, down
		// BandUp/19), and a bucket of a suspect run (CUSUM above 0) raises
		// it by BandSuspect at most, so that growth stays above it.
		switch {
		case x <= s.bmax:
			s.bmax = max(s.bmax-BandUp/19, 0)
		case s.cusum >= GrowthH/2:
			s.bmax = min(x, s.bmax+BandSuspect)
		default:
			s.bmax = min(x, s.bmax+BandUp)
		}
	} else {
		s.bmax = max(s.bmax, x)
	}
	// The deviation: the device's own burstiness around an EWMA of its
	// buckets (robust: a residual counts at most 4 deviations, moves the
	// mean by at most 2); the first buckets are averaged.
	a := max(GrowthAlpha, 1/float64(s.nb+2))
	r := x - s.mean
	s.mean = min(max(s.mean+a*min(max(r, -2*dev), 2*dev), 0), maxLog)
	s.dev = min(s.dev+a*(min(math.Abs(r), 4*dev)-s.dev), maxLog)
	if s.nb < math.MaxUint16 {
		s.nb++
	}
	return f
}

// view reads the class's bands from the fleet view at most once per event.
type view struct {
	read           bool
	window, bucket float64
}

// bands returns the class's bands from the fleet view, 0 when it does not
// know them.
func (v *view) bands(fleet detectors.Fleet, class uint64) (window, bucket float64) {
	if !v.read {
		v.read = true
		switch cb := fleet.(type) {
		case *Stats: // the detector's own statistics: no interface lookup
			v.window, v.bucket = cb.ClassBands(class)
		case ClassBander:
			v.window, v.bucket = cb.ClassBands(class)
		}
	}
	return v.window, v.bucket
}
