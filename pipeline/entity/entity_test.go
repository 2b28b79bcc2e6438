package entity

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/schemas"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).UnixNano()

func TestDistinctCount(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 50, 212, 300, 600} {
		s := make([]byte, DistinctBytes)
		for i := range n {
			DistinctAdd(s, mix(uint64(i)+1))
			DistinctAdd(s, mix(uint64(i)+1)) // twice: counted once
		}
		got := DistinctCount(s)
		tol := math.Max(1, 0.15*float64(n))
		if math.Abs(got-float64(n)) > tol {
			t.Errorf("%d distinct: estimate %.1f, want within %.0f", n, got, tol)
		}
	}
	full := make([]byte, DistinctBytes)
	for i := range full {
		full[i] = 0xff
	}
	if got := DistinctCount(full); got < 1400 || math.IsInf(got, 0) {
		t.Errorf("full sketch: %v, want a finite saturation near 1420", got)
	}
}

func newOwner(t testing.TB, cfg Config, dcfg decide.Config) *Owner {
	t.Helper()
	if dcfg.AlertThreshold == 0 {
		dcfg = decide.DefaultConfig()
	}
	eng, err := decide.NewEngine(dcfg, decide.NewLimiter(dcfg.MaxBlocksPerMinute))
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOwner(cfg, 1, eng)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func obsOf(t testing.TB, ip string, device uint64, failed bool, at int64, seq uint64) Obs {
	var ev schemas.Event
	ev.ClientIP = netip.MustParseAddr(ip)
	ev.DeviceKey, ev.Time, ev.Seq, ev.ID = device, at, seq, seq
	ev.Protocol = schemas.ProtoHTTP
	ev.Status = 200
	if failed {
		ev.Auth, ev.Status = schemas.AuthFailed, 401
	}
	ob, ok := ObsOf(&ev)
	if !ok {
		t.Fatalf("no observation of %s", ip)
	}
	return ob
}

type results struct {
	alerts    []schemas.Alert
	decisions []schemas.Decision
}

func (r *results) emit(a *schemas.Alert, d *schemas.Decision) {
	if a != nil {
		r.alerts = append(r.alerts, *a)
	}
	if d != nil {
		r.decisions = append(r.decisions, *d)
	}
}

// TestCredentialStuffing: 300 failed logins from one address against 300
// devices, 10 a second, alert on that address and block it within seconds,
// with an explanation that names it and the distinct count; its /24 (one
// address) is neither alerted nor blocked.
func TestCredentialStuffing(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	var blockedAt int64
	for i := range 300 {
		at := t0 + int64(i)*int64(100*time.Millisecond)
		ob := obsOf(t, "198.51.100.7", mix(uint64(i)+7), true, at, uint64(i+1))
		o.Observe(&ob, r.emit)
		if blockedAt == 0 && len(r.decisions) > 0 {
			blockedAt = at
		}
	}
	if len(r.decisions) != 1 || r.decisions[0].Scope != schemas.ScopeIP || r.decisions[0].Value != "198.51.100.7" ||
		r.decisions[0].Action != schemas.ActionBlock {
		t.Fatalf("decisions %+v, want one block of ip 198.51.100.7", r.decisions)
	}
	if d := time.Duration(blockedAt - t0); d > 10*time.Second {
		t.Errorf("blocked %v after the first failure, want within 10s", d)
	}
	last := r.alerts[len(r.alerts)-1]
	if last.EntityKind != schemas.EntityIP || last.Entity != "198.51.100.7" || last.Device != "" {
		t.Errorf("alert names %q %q device %q", last.EntityKind, last.Entity, last.Device)
	}
	s := Sentence(&last)
	if !strings.HasPrefix(s, "198.51.100.7 failed auth for ") || !strings.Contains(s, "expected <= 2") {
		t.Errorf("explanation %q", s)
	}
	for _, a := range r.alerts {
		if a.EntityKind != schemas.EntityIP {
			t.Errorf("alert on %s %s: one address's attack is not its network's", a.EntityKind, a.Entity)
		}
	}
	if len(r.alerts) > 4 {
		t.Errorf("%d alerts for one run, want at most one per severity", len(r.alerts))
	}
}

// TestBackendIncident: every device fails a third of its calls with 503 for
// five minutes, each from its own usual address, and a gateway's NAT address
// carries 30 devices all along: no entity finding.
func TestBackendIncident(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	seq := uint64(0)
	step := func(ip string, dev uint64, at int64, status uint16) {
		seq++
		var ev schemas.Event
		ev.ClientIP = netip.MustParseAddr(ip)
		ev.DeviceKey, ev.Time, ev.Seq, ev.ID, ev.Status, ev.Auth = dev, at, seq, seq, status, schemas.AuthOK
		ob, _ := ObsOf(&ev)
		o.Observe(&ob, r.emit)
	}
	for minute := range 60 {
		incident := minute >= 40 && minute < 45
		for d := range 200 {
			at := t0 + int64(minute)*int64(time.Minute) + int64(d)*int64(time.Millisecond)
			status := uint16(200)
			if incident && d%3 == 0 {
				status = 503
			}
			ip := netip.AddrFrom4([4]byte{203, 0, byte(d / 200), byte(d%200 + 1)}).String()
			step(ip, mix(uint64(d)+1), at, status)
			if d < 30 { // the NAT gateway of a site: 30 devices, one address, learned
				step("192.0.2.1", mix(uint64(d)+1000), at, status)
			}
		}
	}
	if len(r.alerts) != 0 {
		t.Errorf("a backend incident raised %d entity alerts, first %+v", len(r.alerts), r.alerts[0])
	}
}

// TestPrefixSpread: 40 addresses of one /24, each failing auth for a few
// devices, is the network's attack: the prefix is alerted and blocked (cidr).
func TestPrefixSpread(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	seq := uint64(0)
	for i := range 400 {
		seq++
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i%40 + 1)}).String()
		ob := obsOf(t, ip, mix(uint64(i)+99), true, t0+int64(i)*int64(100*time.Millisecond), seq)
		o.Observe(&ob, r.emit)
	}
	var cidr bool
	for _, d := range r.decisions {
		if d.Scope == schemas.ScopeCIDR && d.Value == "198.51.100.0/24" {
			cidr = true
		}
		if d.Scope == schemas.ScopeIP {
			t.Errorf("blocked address %s, which failed for 10 devices only", d.Value)
		}
	}
	if !cidr {
		t.Errorf("decisions %+v, want a cidr block of 198.51.100.0/24", r.decisions)
	}
	for _, a := range r.alerts {
		if a.EntityKind == schemas.EntityPrefix && (a.Entity != "198.51.100.0/24" || a.ClientIP != "") {
			t.Errorf("prefix alert names %q, client ip %q", a.Entity, a.ClientIP)
		}
	}
}

// TestAllowlistedPrefix: an attacker inside an allowlisted range is alerted,
// not blocked.
func TestAllowlistedPrefix(t *testing.T) {
	dc := decide.DefaultConfig()
	dc.Allowlist = []string{"198.51.100.0/28"}
	o := newOwner(t, Config{}, dc)
	var r results
	for i := range 300 {
		ob := obsOf(t, "198.51.100.7", mix(uint64(i)+7), true, t0+int64(i)*int64(100*time.Millisecond), uint64(i+1))
		o.Observe(&ob, r.emit)
	}
	if len(r.alerts) == 0 || len(r.decisions) != 0 {
		t.Errorf("%d alerts, decisions %+v: want alerts and no block", len(r.alerts), r.decisions)
	}
}

// TestRedeliveryLearnsOnce: observations replayed at or before an entity's
// position leave its record as it was.
func TestRedeliveryLearnsOnce(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	for i := range 50 {
		ob := obsOf(t, "192.0.2.9", 42, true, t0+int64(i)*int64(time.Minute), uint64(i+1))
		o.Observe(&ob, r.emit)
	}
	k, a := keyOf(kindIP, netip.MustParseAddr("192.0.2.9").As16())
	rec, ok := o.Table().Lookup(k, a)
	if !ok {
		t.Fatal("no record")
	}
	before := string(rec)
	for i := range 50 {
		ob := obsOf(t, "192.0.2.9", uint64(i), true, t0+int64(i)*int64(time.Minute), uint64(i+1))
		o.Observe(&ob, r.emit)
	}
	if rec, _ := o.Table().Lookup(k, a); string(rec) != before {
		t.Error("redelivered observations changed the record")
	}
	// The address's 50, and its prefix's 5: a failure counts toward its
	// network only while the address is not a usual one (its first
	// 5-minute window).
	if o.Stats().Relearned != 55 {
		t.Errorf("Relearned = %d, want 55", o.Stats().Relearned)
	}
}

// TestRedeliveryRaisesNothing: an address fails auth for one device a minute
// for 40 minutes (no finding), then for 60 devices in 6 s (credential
// stuffing: alerted and blocked). Observations of the slow phase redelivered
// then would be judged against the burst's record and alerted again; at or
// before the address's position, they raise nothing.
func TestRedeliveryRaisesNothing(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	slow := func(i int) Obs {
		return obsOf(t, "192.0.2.9", mix(uint64(i)+7), true, t0+int64(i)*int64(time.Minute), uint64(i+1))
	}
	for i := range 40 {
		ob := slow(i)
		o.Observe(&ob, r.emit)
	}
	if len(r.alerts) != 0 {
		t.Fatalf("the slow phase raised %d alerts, want none", len(r.alerts))
	}
	for i := range 60 {
		ob := obsOf(t, "192.0.2.9", mix(uint64(i)+1000), true, t0+int64(40*time.Minute)+int64(i)*int64(100*time.Millisecond), uint64(100+i))
		o.Observe(&ob, r.emit)
	}
	alerts, decisions := len(r.alerts), len(r.decisions)
	if alerts == 0 {
		t.Fatal("the burst raised no alert: the test shows nothing")
	}
	for i := 30; i < 40; i++ {
		ob := slow(i)
		o.Observe(&ob, r.emit)
	}
	if len(r.alerts) != alerts || len(r.decisions) != decisions {
		t.Errorf("redelivered observations raised %d alerts and %d decisions, want none", len(r.alerts)-alerts, len(r.decisions)-decisions)
	}
}

// TestIPIdentifiedDevice: an address that is its device's identity is not
// judged as an IP entity as well.
func TestIPIdentifiedDevice(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var ev schemas.Event
	ev.ClientIP = netip.MustParseAddr("192.0.2.77")
	ev.IDMethod, ev.Time, ev.DeviceKey, ev.Auth = schemas.IDClientIP, t0, 5, schemas.AuthFailed
	ob, _ := ObsOf(&ev)
	o.Observe(&ob, func(*schemas.Alert, *schemas.Decision) {})
	k, a := keyOf(kindIP, ob.Addr)
	if _, ok := o.Table().Lookup(k, a); ok {
		t.Error("an IP-identified device's address got an IP entity record")
	}
	if o.Table().Len() != 1 {
		t.Errorf("%d records, want its prefix's only", o.Table().Len())
	}
}

// TestFloodOfDistinctIPs: 5 million distinct addresses, each seen once,
// against a cap of 20,000 entities: the count stays at the cap, the
// evictions are counted, and entities with a learned baseline survive.
func TestFloodOfDistinctIPs(t *testing.T) {
	const limit = 20_000
	o := newOwner(t, Config{MaxEntities: limit}, decide.Config{})
	emit := func(*schemas.Alert, *schemas.Decision) {}
	// Ten addresses with a baseline (a week of windows).
	for w := range 10 {
		for i := range 10 {
			ob := obsOf(t, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).String(), uint64(i), false,
				t0+int64(w)*int64(6*time.Minute), uint64(w*10+i+1))
			o.Observe(&ob, emit)
		}
	}
	n := 5_000_000
	if testing.Short() {
		n = 500_000
	}
	start := t0 + int64(time.Hour)
	for i := range n {
		var ev schemas.Event
		ev.ClientIP = netip.AddrFrom4([4]byte{byte(10 + i>>24), byte(i >> 16), byte(i >> 8), byte(i)})
		ev.DeviceKey, ev.Time, ev.Seq = uint64(i), start+int64(i)*int64(time.Microsecond), uint64(1000+i)
		ob, _ := ObsOf(&ev)
		o.Observe(&ob, emit)
		if l := o.Table().Len(); l > limit {
			t.Fatalf("after %d addresses: %d entities, cap %d", i+1, l, limit)
		}
	}
	st := o.Stats()
	if st.Devices != limit || st.LiveEvictions < uint64(n-limit) {
		t.Errorf("stats %+v: want %d entities and at least %d evictions", st.Stats, limit, n-limit)
	}
	for i := range 10 {
		k, a := keyOf(kindIP, netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).As16())
		if _, ok := o.Table().Lookup(k, a); !ok {
			t.Errorf("learned address 192.0.2.%d was evicted by the flood", i+1)
		}
	}
}

// TestShardOfRecord: a record's owner, as a checkpoint restore computes it
// from the record, is the owner its observations go to, for addresses,
// prefixes and the route record a new address makes, IPv4 and IPv6, and any
// owner count.
func TestShardOfRecord(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7} {
		for i := range 200 {
			ip := netip.AddrFrom4([4]byte{byte(i), byte(i * 7), byte(i * 13), byte(i * 29)})
			if i%2 == 1 {
				ip = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i), byte(i * 3), 9: byte(i), 15: byte(i * 5)})
			}
			o := newOwner(t, Config{}, decide.Config{})
			ob := obsOf(t, ip.String(), uint64(i), true, t0, 1)
			o.Observe(&ob, func(*schemas.Alert, *schemas.Decision) {})
			want, recs := Shard(&ob, n), 0
			o.Table().Range(func(_, _ uint64, _ int64, rec []byte) bool {
				recs++
				if got := ShardOf(rec, n); got != want {
					t.Errorf("%s, %d owners: record's owner %d, observations' %d", ip, n, got, want)
				}
				return true
			})
			if recs != 3 {
				t.Fatalf("%s: %d records, want the address's, its prefix's and its route's (a new address)", ip, recs)
			}
		}
	}
}

// TestSkipBlocked: with SkipBlocked, an address's requests while its own
// block holds (refused by the enforcement points, logged without a verdict)
// are not judged: no repeat, and no renewal of the block when it expires.
func TestSkipBlocked(t *testing.T) {
	for _, skip := range []bool{false, true} {
		o := newOwner(t, Config{SkipBlocked: skip}, decide.Config{})
		var r results
		for i := range 2000 { // 200 s of failures: the block (15 min) holds throughout
			ob := obsOf(t, "198.51.100.7", mix(uint64(i)+7), true, t0+int64(i)*int64(100*time.Millisecond), uint64(i+1))
			o.Observe(&ob, r.emit)
		}
		skipped := o.Stats().Skipped
		switch {
		case len(r.decisions) != 1:
			t.Errorf("skip %v: %d decisions, want one block", skip, len(r.decisions))
		case skip && skipped == 0:
			t.Error("SkipBlocked: nothing skipped while the block held")
		case !skip && skipped != 0:
			t.Errorf("without SkipBlocked: %d skipped", skipped)
		}
	}
}

func keyEvent(key string, dev uint64, ip netip.Addr, at int64, seq uint64) *schemas.Event {
	var ev schemas.Event
	ev.SetText(&ev.APIKey, []byte(key))
	ev.IDMethod = schemas.IDToken
	ev.ClientIP, ev.DeviceKey, ev.Time, ev.Seq, ev.ID = ip, dev, at, seq, seq
	ev.Protocol, ev.Status, ev.Auth = schemas.ProtoHTTP, 200, schemas.AuthOK
	return &ev
}

// TestKeySpread: a key one device used for two hours from its own address,
// then leaked and used by 60 devices from 60 networks within minutes, is
// alerted and blocked (scope api_key); a key 30 devices share every window
// is not.
func TestKeySpread(t *testing.T) {
	o := newOwner(t, Config{}, decide.Config{})
	var r results
	seq := uint64(0)
	observe := func(ev *schemas.Event) {
		ob, ok := KeyObsOf(ev)
		if !ok {
			t.Fatal("no key observation")
		}
		o.Observe(&ob, r.emit)
	}
	home := netip.MustParseAddr("192.0.2.10")
	for m := range 120 {
		for d := range 30 { // the shared key, from the site's NAT
			seq++
			observe(keyEvent("k-shared", mix(uint64(d)+500), home, t0+int64(m)*int64(time.Minute)+int64(d), seq))
		}
		seq++
		observe(keyEvent("k-lock7", 7, home, t0+int64(m)*int64(time.Minute), seq))
	}
	if len(r.alerts) != 0 {
		t.Fatalf("%d alerts before the leak, first %+v", len(r.alerts), r.alerts[0])
	}
	leak := t0 + 120*int64(time.Minute)
	for i := range 60 {
		seq++
		ip := netip.AddrFrom4([4]byte{100, byte(i), 7, 1})
		observe(keyEvent("k-lock7", mix(uint64(i)+9000), ip, leak+int64(i)*int64(2*time.Second), seq))
	}
	var blocked bool
	for _, d := range r.decisions {
		if d.Scope == schemas.ScopeAPIKey && d.Value == "k-lock7" && d.Action == schemas.ActionBlock {
			blocked = true
		}
	}
	if !blocked {
		t.Errorf("decisions %+v, want a block of api_key k-lock7", r.decisions)
	}
	for _, a := range r.alerts {
		if a.EntityKind != schemas.EntityAPIKey || a.Entity != "k-lock7" || a.Reasons[0].Reason != ReasonKeySpread {
			t.Errorf("alert on %s %q (%s): only the leaked key should be", a.EntityKind, a.Entity, a.Reasons[0].Reason)
		}
	}
	if len(r.alerts) > 0 {
		if s := Sentence(&r.alerts[0]); !strings.HasPrefix(s, "API key k-lock7 used by ") {
			t.Errorf("explanation %q", s)
		}
	}
	// A device identified by its key is the key's device: no key entity.
	ev := keyEvent("k-lock7", 7, home, leak, seq+1)
	ev.IDMethod = schemas.IDAPIKey
	if _, ok := KeyObsOf(ev); ok {
		t.Error("a key that identifies its device got a key observation")
	}
}
