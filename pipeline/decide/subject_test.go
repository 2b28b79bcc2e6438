package decide

import (
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/abuse"
	"github.com/iotwatch/iotwatch/schemas"
)

// addressEvent is a request identified only by its client address, with a
// user agent.
func addressEvent(ip, ua string, at time.Duration) *schemas.Event {
	ev := event(ip, "", ip, at)
	ev.IDMethod = schemas.IDClientIP
	ev.SetText(&ev.Firmware, []byte(ua))
	return ev
}

const chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

// A browser's burst is a rate spike against its address's baseline: no
// finding about it, no alert, no block. The same finding on a device alerts
// and blocks.
func TestBrowserBurstIsNoFinding(t *testing.T) {
	e := engine(t, nil)
	s := scored(flood, weak)
	if a, d := e.Decide(addressEvent("81.2.3.4", chrome, 0), s); a != nil || d != nil {
		t.Fatalf("a browser's rate spike: alert %v, decision %v; want none", a, d)
	}
	if s.N != 0 || s.Score != 0 {
		t.Errorf("a browser's rate spike kept %d findings, score %v; want none", s.N, s.Score)
	}
	if a, d := e.Decide(event("dev-1", "k1", "10.0.0.1", time.Second), scored(flood)); a == nil || d == nil {
		t.Errorf("a device's rate spike: alert %v, decision %v; want both", a, d)
	}
}

// A client that is only an address (here a device behind it, with a
// firmware user agent) is blocked only on one absolute finding of at least
// AddressBlockScore: an absolute finding below it alerts, and baseline
// findings are dropped, however many.
func TestAddressBlockNeedsAbsoluteEvidence(t *testing.T) {
	probe := func(score float32) schemas.Finding {
		return schemas.Finding{Detector: abuse.Name, Reason: abuse.ReasonKnownBadRequest, Score: score, Observed: 4}
	}
	e := engine(t, nil)
	s := scored(probe(0.9), flood, abroad)
	a, d := e.Decide(addressEvent("92.1.1.1", "acme-sensor/2.4.1", 0), s)
	if a == nil || d != nil {
		t.Fatalf("an address with a 0.9 known-bad request: alert %v, decision %v; want an alert only", a, d)
	}
	if s.N != 1 || len(a.Reasons) != 1 || a.Reasons[0].Reason != abuse.ReasonKnownBadRequest {
		t.Errorf("kept %d findings, alert reasons %v; want the absolute one only", s.N, a.Reasons)
	}
	a, d = e.Decide(addressEvent("92.1.1.1", "acme-sensor/2.4.1", time.Second), scored(probe(AddressBlockScore)))
	if a == nil || d == nil || d.Scope != schemas.ScopeIP || d.Value != "92.1.1.1" {
		t.Fatalf("an address with a %v known-bad request: alert %v, decision %+v; want a block of the address", AddressBlockScore, a, d)
	}
}

func TestKeepAbsoluteAllocs(t *testing.T) {
	s := scored(flood, schemas.Finding{Detector: abuse.Name, Reason: abuse.ReasonNotFoundBurst, Score: 0.7}, weak)
	want := *s
	if n := testing.AllocsPerRun(100, func() { *s = want; KeepAbsolute(s) }); n != 0 {
		t.Errorf("KeepAbsolute allocates %v times", n)
	}
	if s.N != 1 || s.Findings[0].Reason != abuse.ReasonNotFoundBurst {
		t.Errorf("KeepAbsolute kept %v", s.Reasons())
	}
}
