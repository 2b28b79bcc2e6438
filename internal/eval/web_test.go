package eval

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	_ "github.com/iotwatch/iotwatch/detectors/all" // the detectors of the binary
	"github.com/iotwatch/iotwatch/internal/websim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/decide"
)

// TestRunWebPeopleAreNotBlocked replays a small mixed log (people, crawlers,
// integrations, monitors, devices and gateways behind one NGINX, and
// attackers of every type) through the scoring stack: no benign address is
// blocked, at most 1% are alerted, and every attacker the signature tool
// catches is caught.
func TestRunWebPeopleAreNotBlocked(t *testing.T) {
	if testing.Short() {
		t.Skip("replays about 100,000 lines")
	}
	res, err := RunWeb(context.Background(), pipeline.Config{Decide: decide.DefaultConfig()},
		websim.Config{Seed: 5, IPs: 200, Hours: 1, AttackIPs: 16}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	res.Print(&out)
	t.Log("\n" + out.String())
	if res.Undecodable != 0 {
		t.Errorf("%d lines undecodable", res.Undecodable)
	}
	if res.BenignIPs < 150 || res.Attackers != 16 {
		t.Fatalf("%d benign addresses and %d attackers, want about 200 and 16", res.BenignIPs, res.Attackers)
	}
	if res.BenignBlocked != 0 {
		t.Errorf("%d benign addresses blocked, want none", res.BenignBlocked)
	}
	if 100*res.BenignAlerted > res.BenignIPs {
		t.Errorf("%d of %d benign addresses alerted, want at most 1%%", res.BenignAlerted, res.BenignIPs)
	}
	for _, a := range res.Attacks {
		if a.Injected == 0 {
			t.Errorf("no attacker of type %s", a.Type)
		}
		if a.Alerted < a.SignatureAlerted {
			t.Errorf("%s: %d of %d attackers alerted, the signature tool %d", a.Type, a.Alerted, a.Injected, a.SignatureAlerted)
		}
	}
}

// TestSignature: each rule of the yardstick flags what it names and not a
// page load.
func TestSignature(t *testing.T) {
	s := NewSignature()
	line := func(ip, req string, status string) []byte {
		return []byte(ip + ` - - [05/Jan/2026:10:00:00 +0000] "` + req + ` HTTP/1.1" ` + status + ` 100 "-" "x"`)
	}
	t0 := websim.DefaultStart
	for i := range 100 { // a page load: 100 assets in a second
		s.Observe(line("10.0.0.1", "GET /static/a.js", "200"), t0.Add(timeMs(10*i)))
	}
	for i := range 5 {
		s.Observe(line("10.0.0.2", "GET /.env", "404"), t0.Add(timeMs(1000*i)))
	}
	for i := range 10 {
		s.Observe(line("10.0.0.3", "POST /login", "401"), t0.Add(timeMs(1000*i)))
	}
	for i := range 20 {
		s.Observe(line("10.0.0.4", "GET /x"+string(rune('a'+i)), "404"), t0.Add(timeMs(1000*i)))
	}
	got := s.Flagged()
	want := map[string]string{"10.0.0.2": SigProbe, "10.0.0.3": SigBrute, "10.0.0.4": SigScan}
	for ip, rule := range want {
		if got[ip].Rule != rule {
			t.Errorf("%s flagged by %q, want %q", ip, got[ip].Rule, rule)
		}
	}
	if h, ok := got["10.0.0.1"]; ok {
		t.Errorf("a page load flagged by %q", h.Rule)
	}
}

func timeMs(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
