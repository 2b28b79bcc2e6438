package entity

import (
	"encoding/binary"
	"math"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// ReasonNewIPWave: an address first seen seconds before, in a wave of new
// addresses on its route (many more new addresses a minute than the route
// has), sent more requests in its first seconds than any benign new address
// of that route does (a botnet's bot: the Mirai floods). Observed: its
// requests since it was first seen (within Config.BurstWindow); Expected:
// the most a new address of the route sent in as long outside waves (at
// least Config.BurstFloor-1), or BurstFloor-1 with the label LabelSwarmed.
// A burst beyond the route's counts only once that most stands on
// waveSamples new addresses at the owner (fewer are no evidence of what
// benign new addresses do). An address whose device other new addresses
// address at once (swarm.go: a bot's target; a benign new address is one
// device's new address, and its device sees one at a time) needs only
// Config.BurstFloor requests: on a route whose benign new addresses burst as
// much as the bots do (a vehicle's trip starting on a new carrier address),
// that is what tells them apart. It blocks (scope ip, counted against the
// fresh-address budget, decide.FreshLimiter).
//
// What it trusts: the client address as the format set it
// (schemas.Event.ClientIP). Most formats log the peer address (NGINX's
// $remote_addr, Envoy's downstream remote address), but some take the first
// X-Forwarded-For entry (Traefik's ClientHost; Envoy's text format when the
// downstream address is not logged), which is the client's own only when the
// proxy in front overwrites that header; where a client can write it, it
// can name any address.
// That cannot get a device's usual address blocked: only an address with no
// record (never seen within Config.IdleTTL, or evicted before any learned
// window), in its first BurstWindow, can be; an address a device's events
// came from earlier has a record, and an address that identifies its device
// (schemas.IDClientIP) is not judged. An attacker naming random addresses
// gets random addresses blocked for the block TTL, under their own budget.
const ReasonNewIPWave = "new_ip_wave"

// Route record layout (kindRoute), little-endian, RecordSize bytes: the
// first-seen addresses of one route (schemas.Event.CommandID) at one owner,
// per minute of event time (waveBucket), against the route's own band.
//
//	0:16    version and position, as every entity record
//	16:24   current minute's start (Unix ns; 0: none yet)
//	24:28   new addresses in it, 28:32 in the minute before (0 when there
//	        was a gap)
//	32:36   learned new addresses a minute (float32), 36:40 their learned
//	        mean absolute deviation (float32)
//	40:44   the most requests a young address of the route sent in the
//	        current minute (outside a wave)
//	44:48   learned most requests of a young benign address (float32)
//	48:56   wave until (Unix ns): the wave lasts Config.WaveHold after its
//	        count last exceeded the band
//	56:58   minutes learned (uint16, saturating)
//	58      flags of the current minute (rflagWave: a wave in it)
//	60:62   new addresses seen outside waves (uint16, saturating): the
//	        sample the learned burst stands on
//	119     kind (kindRoute), 120:128 owner route (see Shard)
const (
	rOffBucket  = 16
	rOffNew     = 24
	rOffPrev    = 28
	rOffMean    = 32
	rOffDev     = 36
	rOffBurst   = 40
	rOffLBurst  = 44
	rOffWave    = 48
	rOffBuckets = 56
	rOffFlags   = 58
	rOffSamples = 60

	rflagWave = 1

	kindRoute = 4

	// waveBucket is the span new addresses are counted over.
	waveBucket = int64(time.Minute)
	// waveSamples is the fewest new addresses a route's learned burst must
	// stand on before a burst beyond it is a finding without a swarm.
	waveSamples = 50
	// waveWarm is the minutes of event time an owner must have observed
	// before a route can be in a wave (at start-up every address is new),
	// and the minutes a route must have learned for its record to be kept
	// over others at the cap.
	waveWarm = 10
)

// flagFirst (in an address record's flags) marks its first window: the
// address was first seen at the window's start. roll clears it.
const flagFirst = 4

// young reports whether the address record rec (Judge has counted ob in
// it) is in its first BurstWindow since first seen, and returns its
// requests since.
func young(rec []byte, ob *Obs, c *Config) (bool, uint32) {
	if rec[offFlags]&flagFirst == 0 {
		return false, 0
	}
	start := int64(binary.LittleEndian.Uint64(rec[offStart:]))
	return ob.Time-start < int64(c.BurstWindow), binary.LittleEndian.Uint32(rec[offEvents:])
}

// JudgeWave counts ob's address on its route's record rt (when the address is
// first seen: fresh), keeps the route's band of new addresses a minute and of
// the bursts of benign new addresses, and appends to out a ReasonNewIPWave
// finding when the route is in a wave and the young address (requests since
// first seen: n) sent more than a benign new address of the route does.
// floor is the fewest new addresses a minute of a wave at this owner
// (Config.WaveNewIPs over the owners); warm reports whether the owner has
// observed waveWarm minutes (before, no wave is found). c must have its
// defaults. It is pure,
// never reads the clock and does not allocate; it reports whether it found.
func JudgeWave(rt []byte, ob *Obs, fresh bool, n uint32, floor float64, warm, swarmed bool, c *Config, out *schemas.Scored) bool {
	_ = rt[RecordSize-1]
	rt[offKind] = kindRoute
	t := ob.Time
	b := t - t%waveBucket
	if t < 0 && t%waveBucket != 0 {
		b -= waveBucket
	}
	start := int64(binary.LittleEndian.Uint64(rt[rOffBucket:]))
	if start != b {
		if start != 0 && b > start {
			rollRoute(rt, b-start)
		}
		if b > start {
			binary.LittleEndian.PutUint64(rt[rOffBucket:], uint64(b))
			start = b
		}
	}
	count := binary.LittleEndian.Uint32(rt[rOffNew:])
	if fresh {
		count++
		binary.LittleEndian.PutUint32(rt[rOffNew:], count)
	}
	// New addresses in the last minute: this minute's, and the share of the
	// minute before that the last minute still spans.
	est := float64(count) + float64(binary.LittleEndian.Uint32(rt[rOffPrev:]))*(1-float64(t-start)/float64(waveBucket))
	mean := float64(math.Float32frombits(binary.LittleEndian.Uint32(rt[rOffMean:])))
	dev := float64(math.Float32frombits(binary.LittleEndian.Uint32(rt[rOffDev:])))
	until := int64(binary.LittleEndian.Uint64(rt[rOffWave:]))
	if warm && est >= math.Max(floor, math.Max(4*mean, mean+8*dev)) {
		until = t + int64(c.WaveHold)
		binary.LittleEndian.PutUint64(rt[rOffWave:], uint64(until))
	}
	inWave := t < until
	samples := binary.LittleEndian.Uint16(rt[rOffSamples:])
	if inWave {
		rt[rOffFlags] |= rflagWave
	} else {
		if n > binary.LittleEndian.Uint32(rt[rOffBurst:]) {
			binary.LittleEndian.PutUint32(rt[rOffBurst:], n)
		}
		if fresh && samples < math.MaxUint16 {
			binary.LittleEndian.PutUint16(rt[rOffSamples:], samples+1)
		}
	}
	if !inWave {
		return false
	}
	usual := math.Max(float64(c.BurstFloor-1), float64(math.Float32frombits(binary.LittleEndian.Uint32(rt[rOffLBurst:]))))
	f := schemas.Finding{Detector: Name, Reason: ReasonNewIPWave, Score: 0.95,
		Observed: float64(n), Expected: math.Ceil(usual), ObservedLabel: labelFirst(c.BurstWindow), ExpectedLabel: labelNewIP}
	if int(n) < c.BurstFloor {
		return false
	}
	if float64(n) <= f.Expected || samples < waveSamples {
		if !swarmed {
			return false
		}
		f.Expected, f.ExpectedLabel = float64(c.BurstFloor-1), labelSwarmed
	}
	out.Add(f)
	return true
}

// rollRoute ends the route's minute (gap: the span to the new one): its
// count of new addresses and the bursts of its young addresses are learned
// unless the minute was in a wave (an attack does not teach that it is
// normal). The band rises slowly (1/16 of the way a minute) and falls
// faster (1/4), so that the start-up's flood of first-seen addresses is
// forgotten within minutes while a slow rise by an attacker takes hours.
// The benign burst rises by at most 1 a minute and fades by 1% a minute.
func rollRoute(rt []byte, gap int64) {
	count := binary.LittleEndian.Uint32(rt[rOffNew:])
	get := func(off int) float64 { return float64(math.Float32frombits(binary.LittleEndian.Uint32(rt[off:]))) }
	put := func(off int, v float64) { binary.LittleEndian.PutUint32(rt[off:], math.Float32bits(float32(v))) }
	mean, dev, lb := get(rOffMean), get(rOffDev), get(rOffLBurst)
	n := binary.LittleEndian.Uint16(rt[rOffBuckets:])
	learn := func(x, burst float64) {
		if n == 0 {
			mean = x
		} else {
			a := 1.0 / 16
			if x < mean {
				a = 1.0 / 4
			}
			dev += (math.Abs(x-mean) - dev) * a
			mean += (x - mean) * a
		}
		lb = math.Max(lb*0.99, math.Min(burst, math.Floor(lb)+1))
		if n < math.MaxUint16 {
			n++
		}
	}
	if rt[rOffFlags]&rflagWave == 0 {
		learn(float64(count), float64(binary.LittleEndian.Uint32(rt[rOffBurst:])))
	}
	// The minutes in between had no new address on the route (up to an
	// hour of them: by then the band is at its floor).
	for range min(gap/waveBucket-1, 60) {
		learn(0, 0)
	}
	put(rOffMean, mean)
	put(rOffDev, dev)
	put(rOffLBurst, lb)
	binary.LittleEndian.PutUint16(rt[rOffBuckets:], n)
	prev := uint32(0)
	if gap == waveBucket {
		prev = count
	}
	binary.LittleEndian.PutUint32(rt[rOffPrev:], prev)
	binary.LittleEndian.PutUint32(rt[rOffNew:], 0)
	binary.LittleEndian.PutUint32(rt[rOffBurst:], 0)
	rt[rOffFlags] = 0
}

// routeKey returns the state key of route at an owner.
func routeKey(route uint64) (key, alt uint64) {
	var a [16]byte
	binary.LittleEndian.PutUint64(a[:], route)
	return keyOf(kindRoute, a)
}

var (
	labelNewIP   = schemas.LabelString("new IP most")
	labelSwarmed = schemas.LabelString(LabelSwarmed)
)

// LabelSwarmed is the expected label of a ReasonNewIPWave finding on an
// address whose device other new addresses address at once (its Expected
// is then Config.BurstFloor-1).
const LabelSwarmed = "device swarmed"

// labelFirst is the label of a count since first seen, within w: "first 30s".
func labelFirst(w time.Duration) schemas.Label {
	if w == 30*time.Second {
		return labelFirst30
	}
	var l schemas.Label
	b := append(l[:0], "first "...)
	s := int(w / time.Second)
	var d [8]byte
	i := len(d)
	for ; s > 0 && i > 0; s /= 10 {
		i--
		d[i] = byte('0' + s%10)
	}
	b = append(append(b, d[i:]...), 's')
	copy(l[:], b)
	return l
}

var labelFirst30 = schemas.LabelString("first 30s")
