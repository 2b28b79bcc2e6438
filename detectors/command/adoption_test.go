package command

import (
	"fmt"
	"math"
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestAdoptionsWindow: adoptions count for the window they fall in and the
// next, and are gone two windows later; a device does not count itself.
func TestAdoptionsWindow(t *testing.T) {
	a := newAdoptions(1024)
	const key = 42
	w := int64(AdoptWindow * 1e9)
	t0 := 100 * w
	for i := range 6 {
		a.learn(key, uint64(i)<<58, t0+int64(i))
	}
	cases := []struct {
		name   string
		t      int64
		device uint64
		want   float64
		approx bool
	}{
		{"same window, another device", t0 + w/2, 63 << 58, 6, true},
		{"same window, one of them", t0 + w/2, 0, 5, true},
		{"next window", t0 + w + 1, 63 << 58, 6, true},
		{"two windows later", t0 + 2*w, 63 << 58, 0, false},
		{"unknown key", t0, 63 << 58, 0, false},
	}
	for _, c := range cases {
		k := uint64(key)
		if c.name == "unknown key" {
			k = 43
		}
		got := a.devices(k, c.device, c.t)
		if c.approx && (got < c.want-0.5 || got > c.want+0.5) || !c.approx && got != c.want {
			t.Errorf("%s: %v devices, want %v", c.name, got, c.want)
		}
	}
	// A new window rotates: the old adoptions move to the previous window.
	a.learn(key, 10<<58, t0+w)
	if got := a.devices(key, 63<<58, t0+w); got < 6.5 || got > 7.5 {
		t.Errorf("after a rotation: %v devices, want 7", got)
	}
	a.learn(key, 11<<58, t0+3*w)
	if got := a.devices(key, 63<<58, t0+3*w); got < 0.5 || got > 1.5 {
		t.Errorf("after a gap of two windows: %v devices, want 1", got)
	}
}

// TestWhere: a device's home network is known once stable; another address
// of its /24, or another network on the home's ASN, is home; anything else
// is away, and a device that moves for good gets a new home.
func TestWhere(t *testing.T) {
	ev := &schemas.Event{ClientIP: netip.MustParseAddr("192.0.2.10"), ASN: 3320}
	var s state
	for range HomeNetStable - 1 {
		s.learnNet(ev)
	}
	if p := s.where(ev); p != placeUnknown {
		t.Fatalf("after %d events: place %d, want unknown", HomeNetStable-1, p)
	}
	s.learnNet(ev)
	for _, c := range []struct {
		ip   string
		asn  uint32
		want place
	}{
		{"192.0.2.10", 3320, placeHome},
		{"192.0.2.99", 0, placeHome},
		{"198.51.100.7", 3320, placeHome},
		{"198.51.100.7", 64500, placeAway},
		{"203.0.113.50", 0, placeAway},
	} {
		e := &schemas.Event{ClientIP: netip.MustParseAddr(c.ip), ASN: c.asn}
		if p := s.where(e); p != c.want {
			t.Errorf("%s on AS%d: place %d, want %d", c.ip, c.asn, p, c.want)
		}
	}
	away := &schemas.Event{ClientIP: netip.MustParseAddr("203.0.113.50"), ASN: 64500}
	for range 2 * HomeNetStable {
		s.learnNet(away)
	}
	if p := s.where(away); p != placeHome {
		t.Errorf("after moving for good: place %d, want home", p)
	}
}

// TestRolloutStep: a transition no other device made, in an established
// class of 120, scores 0.65; it is a rollout's step (ScoreRollout) when its
// command is adopted by AdoptMin others, or by one other while the class
// adopts commands broadly; never away from home, nor when only unrelated
// commands are being adopted.
func TestRolloutStep(t *testing.T) {
	const t0 = int64(1736121600e9)
	ip := netip.MustParseAddr("192.0.2.10")
	mk := func(device, cmd string, at int64) *schemas.Event { return thermostatAt(device, cmd, at, ip) }
	// home is a warm device's record at home, that never issued anything
	// but its state report.
	home := func(ev *schemas.Event) []byte {
		b := make([]byte, StateSize)
		s := state{first: ev.Time - 2*3600e9, n: 200, homeNet: netHash(ev.ClientIP), homeNetCnt: homeNetMax, homeASN: asnHash(ev.ASN)}
		s.store(b)
		return b
	}
	const (
		stateCmd = "POST /v2/devices/th-1/state"
		report   = "POST /v2/devices/th-1/firmware/report"
		health   = "POST /v2/devices/th-1/health"
		unknown  = "POST /v2/devices/th-1/calibrate"
	)
	setup := func(adopt map[string]int) *Stats {
		fleet := newTestStats(1<<12, 1<<10)
		for i := range 120 {
			ev := mk(fmt.Sprintf("th-%d", i), stateCmd, t0-25*3600e9) // a class a day old (ClassMatureAge)
			fleet.learn(ev, 0)
		}
		i := 1000
		for cmd, n := range adopt {
			for range n {
				ev := mk(fmt.Sprintf("th-%d", i), cmd, t0-60e9)
				fleet.classes.Learn(ev)
				fleet.Learn(ev, home(ev))
				i++
			}
		}
		return fleet
	}
	prev := mk("d", stateCmd, t0).CommandID
	for _, c := range []struct {
		name  string
		adopt map[string]int
		cmd   string
		asn   uint32
		ip    string
		want  float32
	}{
		{"nobody adopts", nil, health, 3320, "192.0.2.10", 0.65},
		{"the command adopted by 5", map[string]int{health: 5}, health, 3320, "192.0.2.10", ScoreRollout},
		{"the same, away from home", map[string]int{health: 5}, health, 64500, "203.0.113.50", 0.65},
		{"adopted by 1, the class by 6", map[string]int{health: 1, report: 5}, health, 3320, "192.0.2.10", ScoreRollout},
		{"adopted by 1, the class by 1", map[string]int{health: 1}, health, 3320, "192.0.2.10", 0.65},
		{"another command adopted by 6", map[string]int{report: 6}, unknown, 3320, "192.0.2.10", 0.65},
	} {
		fleet := setup(c.adopt)
		ev := mk("d", c.cmd, t0)
		ev.ASN, ev.ClientIP = c.asn, netip.MustParseAddr(c.ip)
		var s state
		s.load(home(mk("d", stateCmd, t0)))
		f, _ := transition(ev, prev, fleet, lookClass(ev, fleet), s.where(ev), false)
		if f.Reason != ReasonRareTransition || math.Abs(float64(f.Score-c.want)) > 1e-6 {
			t.Errorf("%s: %s %.2f, want rare_transition %.2f", c.name, f.Reason, f.Score, c.want)
		}
	}
}

// thermostatAt is a request of device (tenant acme, class thermostat/x)
// with the raw command cmd at event time at, from ip in AS 3320.
func thermostatAt(device, cmd string, at int64, ip netip.Addr) *schemas.Event {
	ev := new(schemas.Event)
	ev.SetDevice([]byte("acme"), []byte(device))
	ev.SetClass([]byte("thermostat/x"))
	ev.SetRawCommand(nil, []byte(cmd))
	ev.ClientIP, ev.ASN, ev.Time = ip, 3320, at
	return ev
}
