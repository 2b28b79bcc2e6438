package volume

import (
	"fmt"
	"math"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// learnBursts teaches t devices of one class, each sending one request a
// minute for an hour with the record mem(i) returns (nil: no record), and
// returns the class key.
func learnBursts(t *Stats, class string, devices int, mem func(i int) []byte) uint64 {
	var ev schemas.Event
	ev.SetClass([]byte(class))
	const start = int64(1736121600e9)
	for i := range devices {
		ev.SetDevice([]byte("acme"), fmt.Appendf(nil, "d-%d", i))
		rec := mem(i)
		for tm := start + int64(i)*1e6; tm < start+3600e9; tm += 60e9 {
			ev.Time = tm
			t.Learn(&ev, rec)
		}
	}
	return ev.ClassKey
}

// record returns a volume record whose burst memory (or, open, open
// episode) has the ratios short and run and the length.
func record(short, run, length float64, open bool) []byte {
	b := make([]byte, StateSize)
	at := burstAt
	if open {
		at = peakAt
	}
	putBurst(b[at:], short, run, length)
	return b
}

// TestClassBurst: a class whose devices remember sessions (or have one open)
// gives their upper-quartile ratios and median length; a steady class with a
// few devices remembering a flood gives nothing; an unknown class nothing.
func TestClassBurst(t *testing.T) {
	near := func(got, want float64) bool { return math.Abs(got-want) <= want*0.05 }

	sessions := newStats()
	class := learnBursts(sessions, "camera/x", 200, func(i int) []byte {
		return record(8+float64(i%5), 12+float64(i%5), 20+float64(i%3), i%2 == 0)
	})
	short, run, length := sessions.ClassBurst(class)
	if !near(short, 11) || !near(run, 15) || !near(length, 21) {
		t.Errorf("session class: ClassBurst = %v, %v, %v; want about 11, 15, 21", short, run, length)
	}
	if s, r, l := sessions.ClassBurst(class ^ 1); s != 0 || r != 0 || l != 0 {
		t.Errorf("unknown class: ClassBurst = %v, %v, %v; want 0", s, r, l)
	}

	// 10 of 200 steady devices remember a flood at 40x.
	steady := newStats()
	class = learnBursts(steady, "meter/x", 200, func(i int) []byte {
		if i%20 == 0 {
			return record(40, 40, 150, false)
		}
		return make([]byte, StateSize)
	})
	if s, r, l := steady.ClassBurst(class); s != 0 || r != 0 || l != 0 {
		t.Errorf("steady class with 10 of 200 devices remembering a flood: ClassBurst = %v, %v, %v; want 0", s, r, l)
	}
	if a := testing.AllocsPerRun(100, func() { sessions.ClassBurst(class) }); a != 0 {
		t.Errorf("ClassBurst allocates %v times; want 0", a)
	}
}

// TestBurstRoundTrip: the burst memory survives a record's round trip within
// its quantization (quarters, up to MaxBurst).
func TestBurstRoundTrip(t *testing.T) {
	b := make([]byte, 4)
	for _, v := range []float64{0, 1.5, 16, 45, 900} {
		putBurst(b, v, 2*v, v)
		s, r, l := getBurst(b)
		if math.Abs(s-min(v, MaxBurst)) > 0.125 || math.Abs(r-min(2*v, MaxBurst)) > 0.125 || l != math.Round(v) {
			t.Errorf("burst %v, %v, %v read back as %v, %v, %v", v, 2*v, v, s, r, l)
		}
	}
}
