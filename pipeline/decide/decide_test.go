package decide

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors/abuse"
	"github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/detectors/geo"
	"github.com/iotwatch/iotwatch/detectors/volume"
	"github.com/iotwatch/iotwatch/schemas"
)

var t0 = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC).UnixNano()

func event(device, key, ip string, at time.Duration) *schemas.Event {
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte(device))
	ev.SetText(&ev.APIKey, []byte(key))
	ev.ClientIP = netip.MustParseAddr(ip)
	ev.Time = t0 + int64(at)
	ev.ID = uint64(at)
	return &ev
}

func scored(fs ...schemas.Finding) *schemas.Scored {
	var s schemas.Scored
	for _, f := range fs {
		s.Add(f)
	}
	return &s
}

var (
	flood  = schemas.Finding{Detector: volume.Name, Reason: volume.ReasonRateSpike, Score: 0.95, Observed: 50, Expected: 1}
	abroad = schemas.Finding{Detector: geo.Name, Reason: geo.ReasonNewCountry, Score: 0.9}
	weak   = schemas.Finding{Detector: command.Name, Reason: command.ReasonNewCommand, Score: 0.3}
)

func engine(t *testing.T, mod func(*Config)) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	e, err := NewEngine(cfg, NewLimiter(cfg.MaxBlocksPerMinute))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestCombineIsNoisyOr(t *testing.T) {
	s := scored(schemas.Finding{Reason: "a", Score: 0.5}, schemas.Finding{Reason: "b", Score: 0.5})
	if got := Combine(s); got < 0.749 || got > 0.751 {
		t.Errorf("Combine(0.5, 0.5) = %v, want 0.75", got)
	}
	if got := Combine(scored()); got != 0 {
		t.Errorf("Combine() = %v, want 0", got)
	}
}

func TestBelowThresholdNothing(t *testing.T) {
	e := engine(t, nil)
	a, d := e.Decide(event("d-1", "k", "203.0.113.1", 0), scored(weak))
	if a != nil || d != nil {
		t.Fatalf("score 0.3 raised %v %v", a, d)
	}
}

func TestBlockDeviceThenDedup(t *testing.T) {
	e := engine(t, nil)
	a, d := e.Decide(event("d-1", "k", "203.0.113.1", 0), scored(flood))
	if a == nil || d == nil {
		t.Fatalf("flood at 0.95 gave alert=%v decision=%v", a, d)
	}
	if d.Action != schemas.ActionBlock || d.Scope != schemas.ScopeDevice || d.Value != "d-1" || d.AlertID != a.ID {
		t.Errorf("decision = %+v", d)
	}
	if got := d.ExpiresAt.Sub(d.CreatedAt); got != 15*time.Minute {
		t.Errorf("ttl = %v, want 15m", got)
	}
	if a.Severity != schemas.SeverityHigh || a.Reasons[0].Observed != 50 {
		t.Errorf("alert = %+v", a)
	}
	// Same reason within the cool-down: suppressed.
	if a, d := e.Decide(event("d-1", "k", "203.0.113.1", time.Minute), scored(flood)); a != nil || d != nil {
		t.Errorf("repeat within cool-down raised %v %v", a, d)
	}
	// A new reason is news even within the cool-down, but the device is already blocked.
	a, d = e.Decide(event("d-1", "k", "203.0.113.1", 2*time.Minute), scored(weak, flood))
	if a == nil || d != nil {
		t.Errorf("new reason on a blocked device: alert=%v decision=%v, want alert only", a, d)
	}
	// After the block expired and the cool-down passed, a repeat offender gets double the TTL.
	_, d = e.Decide(event("d-1", "k", "203.0.113.1", 20*time.Minute), scored(flood))
	if d == nil || d.ExpiresAt.Sub(d.CreatedAt) != 30*time.Minute {
		t.Errorf("repeat offender decision = %+v, want a 30m block", d)
	}
}

func TestStolenKeyBlocksKey(t *testing.T) {
	e := engine(t, nil)
	_, d := e.Decide(event("d-2", "key-9", "198.51.100.3", 0), scored(abroad, weak))
	if d == nil || d.Scope != schemas.ScopeAPIKey || d.Value != "key-9" {
		t.Fatalf("decision = %+v, want api_key key-9", d)
	}
}

func TestAllowlistAndDryRun(t *testing.T) {
	e := engine(t, func(c *Config) { c.Allowlist = []string{"d-3", "10.0.0.0/8"} })
	if a, d := e.Decide(event("d-3", "k", "203.0.113.1", 0), scored(flood)); a == nil || d != nil {
		t.Errorf("allowlisted device: alert=%v decision=%v, want alert only", a, d)
	}
	if _, d := e.Decide(event("d-4", "k", "10.1.2.3", 0), scored(flood)); d != nil {
		t.Errorf("allowlisted CIDR was blocked: %+v", d)
	}
	e = engine(t, func(c *Config) { c.DryRun = true })
	if _, d := e.Decide(event("d-5", "k", "203.0.113.1", 0), scored(flood)); d == nil || d.Action != schemas.ActionDryRunBlock || !d.DryRun {
		t.Errorf("dry run decision = %+v", d)
	}
}

func TestBlockCap(t *testing.T) {
	e := engine(t, func(c *Config) { c.MaxBlocksPerMinute = 2 })
	blocks := 0
	for i := range 5 {
		a, d := e.Decide(event("d-"+string(rune('a'+i)), "", "203.0.113.1", time.Second), scored(flood))
		if d != nil {
			blocks++
		} else if a == nil || a.Reasons[len(a.Reasons)-1].Reason != ReasonBlockCapHit {
			t.Errorf("capped block must still alert and say so: %+v", a)
		}
	}
	if blocks != 2 {
		t.Errorf("blocks = %d, want the cap of 2", blocks)
	}
}

func TestDeterministicIDs(t *testing.T) {
	a1, d1 := engine(t, nil).Decide(event("d-1", "k", "203.0.113.1", 0), scored(flood))
	a2, d2 := engine(t, nil).Decide(event("d-1", "k", "203.0.113.1", 0), scored(flood))
	if a1.ID != a2.ID || d1.ID != d2.ID {
		t.Errorf("ids differ on replay: %s/%s vs %s/%s", a1.ID, d1.ID, a2.ID, d2.ID)
	}
}

func TestValidateNamesField(t *testing.T) {
	f := func(field string, mod func(*Config)) {
		t.Helper()
		c := DefaultConfig()
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("err = %v, want it to name %q", err, field)
		}
	}
	f("alert_threshold", func(c *Config) { c.AlertThreshold = 0 })
	f("block_threshold", func(c *Config) { c.BlockThreshold = 0.5; c.AlertThreshold = 0.6 })
	f("scope", func(c *Config) { c.Scope = "planet" })
	f("allowlist", func(c *Config) { c.Allowlist = []string{"10.0.0.0/99"} })
	f("block_ttl", func(c *Config) { c.BlockTTL = 0 })
}

func TestDecideQuietPathDoesNotAllocate(t *testing.T) {
	e := engine(t, nil)
	ev := event("d-1", "k", "203.0.113.1", 0)
	s := scored(weak)
	if n := testing.AllocsPerRun(100, func() { e.Decide(ev, s) }); n != 0 {
		t.Errorf("Decide below threshold allocates %v times", n)
	}
}

// TestEscalationWithinCooldown: a flood first scores low, then high. The first
// alert must not suppress the block the higher score warrants.
func TestEscalationWithinCooldown(t *testing.T) {
	e := engine(t, nil)
	low := flood
	low.Score = 0.64
	if a, d := e.Decide(event("d-9", "k", "203.0.113.1", 0), scored(low)); a == nil || d != nil {
		t.Fatalf("score 0.64: alert=%v decision=%v, want an alert only", a, d)
	}
	if a, d := e.Decide(event("d-9", "k", "203.0.113.1", time.Second), scored(low)); a != nil || d != nil {
		t.Fatalf("repeat at 0.64 within the cool-down: alert=%v decision=%v, want nothing", a, d)
	}
	a, d := e.Decide(event("d-9", "k", "203.0.113.1", 2*time.Second), scored(flood))
	if a == nil || d == nil || a.Severity != schemas.SeverityHigh {
		t.Fatalf("escalation to 0.95: alert=%v decision=%v, want a high alert and a block", a, d)
	}
}

// TestScopeFollowsIdentity: --block-scope auto and device block a device in
// the namespace its source identified it in, one its enforcement point can
// match; a stolen key blocks the key; fixed scopes the event lacks fall back
// to the identity's scope.
func TestScopeFollowsIdentity(t *testing.T) {
	type ident struct {
		method schemas.IDMethod
		proto  schemas.Protocol
		source schemas.SourceKind
	}
	http := func(m schemas.IDMethod) ident { return ident{m, schemas.ProtoHTTP, schemas.SourceGateway} }
	mqtt := func(m schemas.IDMethod) ident { return ident{m, schemas.ProtoMQTT, schemas.SourceBroker} }
	f := func(name, scope string, id ident, device, key, tenant string, fs []schemas.Finding, wantScope, wantValue string) {
		t.Helper()
		e := engine(t, func(c *Config) { c.Scope = scope })
		ev := event(device, key, "203.0.113.7", 0)
		ev.IDMethod, ev.Protocol, ev.Source = id.method, id.proto, id.source
		ev.SetDevice([]byte(tenant), []byte(device))
		_, d := e.Decide(ev, scored(fs...))
		if d == nil {
			t.Fatalf("%s: no decision", name)
		}
		if d.Scope != wantScope || d.Value != wantValue {
			t.Errorf("%s: --block-scope %s blocked %s=%q, want %s=%q", name, scope, d.Scope, d.Value, wantScope, wantValue)
		}
	}
	flooded := []schemas.Finding{flood}
	stolen := []schemas.Finding{abroad, weak}
	hash := "9f86d081884c7d65"
	f("API-key device", "auto", http(schemas.IDAPIKey), hash, hash, "acme", flooded, schemas.ScopeAPIKey, hash)
	f("API-key device named apart (canonical json)", "auto", http(schemas.IDAPIKey), "lock-1", "key-7", "acme", flooded, schemas.ScopeAPIKey, "key-7")
	f("stolen key of a header device", "auto", http(schemas.IDToken), "lock-1", "key-7", "acme", stolen, schemas.ScopeAPIKey, "key-7")
	f("header device", "auto", http(schemas.IDToken), "therm-5", "", "acme", flooded, schemas.ScopeDevice, "therm-5")
	f("certificate device", "auto", http(schemas.IDCertificate), "cam-1", "", "acme", flooded, schemas.ScopeDevice, "cam-1")
	f("MQTT username", "auto", mqtt(schemas.IDMQTTUsername), "therm-5", "", "acme", flooded, schemas.ScopeMQTTUsername, "therm-5")
	f("MQTT client id", "auto", mqtt(schemas.IDMQTTClient), "therm-5", "", "acme", flooded, schemas.ScopeMQTTClientID, "therm-5")
	f("MQTT certificate", "auto", mqtt(schemas.IDCertificate), "therm-5", "", "acme", flooded, schemas.ScopeMQTTUsername, "therm-5")
	// An address is blocked only on absolute evidence (AddressBlockScore).
	probed := []schemas.Finding{{Detector: abuse.Name, Reason: abuse.ReasonKnownBadRequest, Score: 0.99}}
	f("client IP only", "auto", http(schemas.IDClientIP), "203.0.113.7", "", "acme", probed, schemas.ScopeIP, "203.0.113.7")
	// A request that failed authentication proves nothing about the
	// identity it claims: its address is blocked, on an address's evidence,
	// never the device it named (an attacker's failed login would lock the
	// real device out).
	refused := func(name string, fs []schemas.Finding, wantBlock bool) {
		t.Helper()
		e := engine(t, func(c *Config) { c.Scope = "auto" })
		ev := event("therm-5", "key-7", "203.0.113.7", 0)
		ev.IDMethod, ev.Protocol, ev.Source = schemas.IDToken, schemas.ProtoHTTP, schemas.SourceGateway
		ev.SetDevice([]byte("acme"), []byte("therm-5"))
		ev.Status, ev.Auth = 401, schemas.AuthFailed
		a, d := e.Decide(ev, scored(fs...))
		if a == nil {
			t.Fatalf("%s: no alert", name)
		}
		switch {
		case !wantBlock && d != nil:
			t.Errorf("%s: blocked %s=%q; want an alert only", name, d.Scope, d.Value)
		case wantBlock && (d == nil || d.Scope != schemas.ScopeIP || d.Value != "203.0.113.7"):
			t.Errorf("%s: decision %+v; want a block of ip=203.0.113.7", name, d)
		}
	}
	refused("refused login, stolen-key findings", stolen, false)
	refused("refused login, flood", flooded, false)
	refused("refused login, known-bad request", probed, true)
	f("fixed device, API-key device", schemas.ScopeDevice, http(schemas.IDAPIKey), hash, hash, "acme", stolen, schemas.ScopeAPIKey, hash)
	f("fixed device, MQTT username", schemas.ScopeDevice, mqtt(schemas.IDMQTTUsername), "therm-5", "", "acme", flooded, schemas.ScopeMQTTUsername, "therm-5")
	f("fixed api_key without a key", schemas.ScopeAPIKey, mqtt(schemas.IDMQTTUsername), "therm-5", "", "acme", flooded, schemas.ScopeMQTTUsername, "therm-5")
	f("fixed ip", schemas.ScopeIP, mqtt(schemas.IDMQTTUsername), "therm-5", "", "acme", flooded, schemas.ScopeIP, "203.0.113.7")
	f("fixed tenant", schemas.ScopeTenant, http(schemas.IDToken), "therm-5", "", "acme", flooded, schemas.ScopeTenant, "acme")
	f("fixed tenant without one", schemas.ScopeTenant, http(schemas.IDToken), "therm-5", "", "", flooded, schemas.ScopeDevice, "therm-5")
}

// TestBlocked: an engine knows the devices it blocked until their blocks
// expire, whatever the scope; a dry run blocks nothing, and other devices
// are not blocked.
func TestBlocked(t *testing.T) {
	f := func(name string, mod func(*Config), ev *schemas.Event, s *schemas.Scored, later time.Duration, want bool) {
		t.Helper()
		e := engine(t, mod)
		_, d := e.Decide(ev, s)
		if d == nil {
			t.Fatalf("%s: no decision", name)
		}
		next := *ev
		next.Time = ev.Time + int64(later)
		if got := e.Blocked(&next); got != want {
			t.Errorf("%s: Blocked %v later = %v, want %v", name, later, got, want)
		}
	}
	f("device block", nil, event("d-1", "k-1", "10.0.0.1", 0), scored(flood), time.Minute, true)
	f("api key block", nil, event("d-1", "k-1", "10.0.0.1", 0), scored(flood, abroad), time.Minute, true)
	f("expired", nil, event("d-1", "k-1", "10.0.0.1", 0), scored(flood), 15*time.Minute, false)
	f("dry run", func(c *Config) { c.DryRun = true }, event("d-1", "k-1", "10.0.0.1", 0), scored(flood), time.Minute, false)

	e := engine(t, nil)
	e.Decide(event("d-1", "k-1", "10.0.0.1", 0), scored(flood))
	if e.Blocked(event("d-2", "k-2", "10.0.0.2", time.Minute)) {
		t.Error("another device is blocked")
	}
}

// TestBlockedDeviceRetriesKeepItsAddressOpen: a device under a block retries
// (a broker refuses it with its client id alone: Mosquitto logs a disabled
// client and a wrong password in the same words). Its refusals alert but
// never block its address, which others may share, while the block lasts and
// RefusalGrace after it; the same refusals from another address, or after
// the grace, block that address; a refusal that names a username is judged
// as ever.
func TestBlockedDeviceRetriesKeepItsAddressOpen(t *testing.T) {
	burst := scored(schemas.Finding{Detector: abuse.Name, Reason: abuse.ReasonAuthFailureBurst, Score: 0.95, Observed: 20, Expected: abuse.MinAuthFailures})
	retry := func(ip string, at time.Duration, method schemas.IDMethod) *schemas.Event {
		ev := event("lock-b-pub", "", ip, at)
		ev.IDMethod, ev.Protocol, ev.Source = method, schemas.ProtoMQTT, schemas.SourceBroker
		ev.Auth, ev.Status = schemas.AuthFailed, 5
		return ev
	}
	f := func(name string, ev *schemas.Event, wantBlock bool) {
		t.Helper()
		e := engine(t, func(c *Config) { c.BlockTTL = time.Minute })
		dev := event("lock-b", "", "198.51.100.4", 0)
		dev.IDMethod, dev.Protocol, dev.Source = schemas.IDMQTTUsername, schemas.ProtoMQTT, schemas.SourceBroker
		if _, d := e.Decide(dev, scored(flood)); d == nil || d.Scope != schemas.ScopeMQTTUsername {
			t.Fatalf("%s: the device's block: %+v", name, d)
		}
		if e.Blocked(ev) == wantBlock {
			t.Errorf("%s: Blocked = %v; want %v (taken for the device's retry)", name, wantBlock, !wantBlock)
		}
		a, d := e.Decide(ev, burst)
		if a == nil {
			t.Fatalf("%s: no alert", name)
		}
		withheld := strings.Contains(reasonsOf(a), ReasonBlockedDeviceAddress)
		switch {
		case wantBlock && (d == nil || d.Scope != schemas.ScopeIP):
			t.Errorf("%s: decision %+v; want a block of its address", name, d)
		case !wantBlock && d != nil:
			t.Errorf("%s: blocked %s=%s; want an alert only (the device's retries)", name, d.Scope, d.Value)
		case withheld == wantBlock:
			t.Errorf("%s: alert reasons %q; want %s only when the block is withheld", name, reasonsOf(a), ReasonBlockedDeviceAddress)
		}
	}
	f("retry during the block", retry("198.51.100.4", 30*time.Second, schemas.IDMQTTClient), false)
	f("retry within the grace", retry("198.51.100.4", time.Minute+RefusalGrace-time.Second, schemas.IDMQTTClient), false)
	f("address-only refusal during the block", retry("198.51.100.4", 30*time.Second, schemas.IDClientIP), false)
	f("retry after the grace", retry("198.51.100.4", time.Minute+RefusalGrace, schemas.IDMQTTClient), true)
	f("another address", retry("198.51.100.5", 30*time.Second, schemas.IDMQTTClient), true)
	named := retry("198.51.100.4", 30*time.Second, schemas.IDMQTTUsername)
	named.SetDevice([]byte("acme"), []byte("lock-c"))
	f("a refusal naming another username", named, true)
}

func reasonsOf(a *schemas.Alert) string {
	var b strings.Builder
	for _, r := range a.Reasons {
		b.WriteString(r.Reason + " ")
	}
	return b.String()
}
