package command

import (
	"fmt"
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// paramFleet is a fleet view whose class learned temp in [19, 23) for the
// thermostats' set command from n events of 8 devices.
func paramFleet(n int) (*Stats, *schemas.Event) {
	fleet := newTestStats(1024, 1024)
	ev := new(schemas.Event)
	for i := range n {
		ev.Reset()
		ev.SetDevice([]byte("acme"), []byte(fmt.Sprintf("t-%d", i%8)))
		ev.SetClass([]byte("thermostat/x"))
		ev.SetCommand([]byte("POST /v1/thermostats/{id}/set"))
		ev.SetArg([]byte("temp"), 19+float64(i%40)/10)
		ev.Time = int64(1736121600e9) + int64(i)*60e9
		fleet.learn(ev, 0)
	}
	ev.SetDevice([]byte("acme"), []byte("t-new"))
	return fleet, ev
}

func TestParamOutOfRange(t *testing.T) {
	fleet, ev := paramFleet(400)
	var d Detector
	judge := func(temp float64) schemas.Finding {
		ev.NArgs = 0
		ev.SetArg([]byte("fan"), 3) // an argument the class never used is not judged
		ev.SetArg([]byte("temp"), temp)
		return d.Observe(ev, make([]byte, StateSize), fleet)
	}
	for _, temp := range []float64{19, 21.5, 23, 24} {
		if f := judge(temp); f.Reason == ReasonParamOutOfRange {
			t.Errorf("temp=%v: %+v, want no argument finding", temp, f)
		}
	}
	last := float32(0)
	for _, temp := range []float64{30, 45, 90, 1e6} {
		f := judge(temp)
		if f.Reason != ReasonParamOutOfRange || f.Observed != temp || f.Expected <= 23 || f.Expected >= 30 ||
			f.ObservedLabel.String() != "temp" || f.ExpectedLabel.String() != "/{id}/set" {
			t.Fatalf("temp=%v: %+v", temp, f)
		}
		if f.Score <= last || f.Score > ScoreParamMax {
			t.Errorf("temp=%v: score %v, want above %v (further out) and at most %v", temp, f.Score, last, ScoreParamMax)
		}
		last = f.Score
	}
	if f := judge(-40); f.Reason != ReasonParamOutOfRange || f.Expected >= 19 {
		t.Errorf("temp=-40: %+v, want out of range below the lower bound", f)
	}
}

func TestParamNeedsHistory(t *testing.T) {
	fleet, ev := paramFleet(detectors.ParamMinEvents - 1)
	ev.SetArg([]byte("temp"), 90)
	if f := (&Detector{}).Observe(ev, make([]byte, StateSize), fleet); f.Reason == ReasonParamOutOfRange {
		t.Errorf("judged with %d values of history: %+v", detectors.ParamMinEvents-1, f)
	}
}

func TestParamObserveDoesNotAllocate(t *testing.T) {
	fleet, ev := paramFleet(400)
	ev.SetArg([]byte("temp"), 90)
	state := make([]byte, StateSize)
	var d Detector
	if n := testing.AllocsPerRun(1000, func() { d.Observe(ev, state, fleet) }); n != 0 {
		t.Errorf("Observe with arguments allocates %.1f times", n)
	}
}
