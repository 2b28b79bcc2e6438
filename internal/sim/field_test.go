package sim

import (
	"crypto/sha256"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// fobs is what the field tests keep of one decoded event.
type fobs struct {
	t        int64
	device   string
	apiKey   string
	class    string
	fw       string
	ip       string
	country  string
	cmd      string
	status   uint16
	in, out  uint64
	arg      float64
	hasArg   bool
	resource string
}

// fieldConfig is a small, fast field fleet: 150 devices over 8 hours, attacks
// after the first half (in US local night for part of it).
func fieldConfig(seed int64) Config {
	return Config{Model: ModelField, Seed: seed, Devices: 150, Duration: 8 * time.Hour, Attacks: true, AttackStart: 0.5}
}

// runField generates cfg's stream through Open, checks that every line
// decodes, is in time order and in the run, and carries the fields the basic
// model's lines carry (country and ASN only missing on a stolen_key_no_geo
// line), and returns the observations and the fleet.
func runField(t *testing.T, cfg Config) (*Field, []fobs, [32]byte) {
	t.Helper()
	fl, err := Open(cfg)
	if err != nil {
		t.Fatalf("cannot open the field model: %s", err)
	}
	f, ok := fl.(*Field)
	if !ok {
		t.Fatalf("Open(%q) returned %T", cfg.Model, fl)
	}
	cfg = f.Config()
	var (
		d      schemas.Decoder
		ev     schemas.Event
		buf    []byte
		out    []fobs
		prev   int64
		h      = sha256.New()
		intern = map[string]string{}
	)
	str := func(b []byte) string {
		if v, ok := intern[string(b)]; ok {
			return v
		}
		v := string(b)
		intern[v] = v
		return v
	}
	noGeoIPs := map[string]bool{}
	for _, l := range f.Labels() {
		if l.Type == AttackStolenKeyNoGeo {
			noGeoIPs[l.IP] = true
		}
	}
	start, end := cfg.Start.UnixNano(), cfg.Start.Add(cfg.Duration).UnixNano()
	for i := 0; ; i++ {
		line, ts, ok := f.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		h.Write(line)
		h.Write([]byte{'\n'})
		if err := d.Decode(line, 1, uint32(i), ts.UnixNano(), &ev); err != nil {
			t.Fatalf("line %d does not decode: %s\n%s", i, err, line)
		}
		if ev.Time != ts.UnixNano() || ev.Time < prev || ev.Time < start || ev.Time >= end {
			t.Fatalf("line %d: time %s (previous %s, run [%s, %s))", i, ts, time.Unix(0, prev).UTC(), cfg.Start, cfg.Start.Add(cfg.Duration))
		}
		prev = ev.Time
		if !strings.Contains(string(ev.Command), schemas.Placeholder) && string(ev.Command) != "POST /v2/auth/token" &&
			string(ev.Command) != "GET /v2/account/devices" && !strings.HasPrefix(string(ev.Command), "GET /v2/images/") {
			t.Fatalf("line %d: command %q has no identifier", i, ev.Command)
		}
		if ev.Source == schemas.SourceUnknown || len(ev.SourceID) == 0 || len(ev.Tenant) == 0 || ev.IDMethod == schemas.IDUnknown ||
			len(ev.Class) == 0 || len(ev.Firmware) == 0 || !ev.ClientIP.IsValid() || ev.Auth == schemas.AuthUnknown {
			t.Fatalf("line %d lacks a field: %s", i, line)
		}
		if geo := ev.Country.Known() && ev.ASN != 0; !geo && !noGeoIPs[ev.ClientIP.String()] {
			t.Fatalf("line %d has no country or ASN and is not a stolen_key_no_geo line: %s", i, line)
		} else if geo && noGeoIPs[ev.ClientIP.String()] {
			t.Fatalf("line %d from a no-geo attacker carries a country: %s", i, line)
		}
		o := fobs{t: ev.Time, device: str(ev.Device), apiKey: str(ev.APIKey), class: str(ev.Class), fw: str(ev.Firmware),
			ip: ev.ClientIP.String(), country: ev.Country.String(), cmd: str(ev.Command), status: ev.Status,
			in: ev.BytesIn, out: ev.BytesOut, resource: str(ev.ResourceText)}
		if ev.NArgs > 0 {
			o.arg, o.hasArg = ev.Args[0].Value, true
		}
		out = append(out, o)
	}
	if f.Emitted() != len(out) {
		t.Fatalf("Emitted() = %d, want %d", f.Emitted(), len(out))
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return f, out, sum
}

// fieldRun3 is runField of fieldConfig(3), run once for the tests that
// read it (a run of the field model is seconds under -race).
var fieldRun3 struct {
	sync.Mutex
	f   *Field
	evs []fobs
	sum [32]byte
}

// sharedField returns runField(t, fieldConfig(3)), running it on first use;
// callers must not change what it returns.
func sharedField(t *testing.T) (*Field, []fobs, [32]byte) {
	t.Helper()
	r := &fieldRun3
	r.Lock()
	defer r.Unlock()
	if r.f == nil {
		r.f, r.evs, r.sum = runField(t, fieldConfig(3))
	}
	return r.f, r.evs, r.sum
}

func TestFieldDeterminism(t *testing.T) {
	cfg := fieldConfig(3)
	f1, evs1, a := sharedField(t)
	f2, _, b := runField(t, cfg) // a run of its own
	if a != b || !reflect.DeepEqual(f1.Labels(), f2.Labels()) || !reflect.DeepEqual(f1.NearMisses(), f2.NearMisses()) {
		t.Fatalf("the same Config gave different runs")
	}
	_, _, c := runField(t, fieldConfig(6))
	if a == c {
		t.Fatalf("seeds 3 and 6 gave the same stream")
	}
	if len(evs1) < 150*8*20 {
		t.Fatalf("%d events from 150 devices in 8 h: too few", len(evs1))
	}
	// The basic model is untouched by the field one: New still refuses it and
	// Open of the basic model is New.
	if _, err := New(cfg); err == nil {
		t.Fatalf("New built the field model")
	}
	if fl, err := Open(Config{Seed: 1, Devices: 50, Duration: time.Hour}); err != nil {
		t.Fatal(err)
	} else if _, ok := fl.(*Sim); !ok || fl.Config().Model != ModelBasic || fl.NearMisses() != nil {
		t.Fatalf("Open of the default model: %T, model %q", fl, fl.Config().Model)
	}
}

func TestFieldValidate(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Model: "harsh"}, "Config.Model"},
		{Config{Model: ModelField, Devices: MinFieldAttackDevices - 1, Attacks: true}, "field model's attacks"},
	} {
		if _, err := Open(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v): %v; want an error about %s", c.cfg, err, c.want)
		}
	}
	if _, err := Open(Config{Model: ModelField, Devices: 20, Duration: time.Hour}); err != nil {
		t.Errorf("a small field fleet without attacks: %s", err)
	}
}

// TestFieldAttacks checks that every attack type is injected and labelled
// exactly: its events are where the label says, and they carry what makes
// the type what it is.
func TestFieldAttacks(t *testing.T) {
	f, evs, _ := sharedField(t)
	labels := f.Labels()
	cfg := f.Config()
	from := cfg.Start.Add(time.Duration(float64(cfg.Duration) * cfg.AttackStart))
	seen := map[string]int{}
	byID := map[string]*fdev{}
	for i := range f.devs {
		byID[f.devs[i].id] = &f.devs[i]
	}
	for _, l := range labels {
		seen[l.Type]++
		d := byID[l.Device]
		if d == nil || l.Start.Before(from) || l.End.Before(l.Start) || l.Events < 1 || l.Tenant != d.tenant || l.APIKey != d.apiKey {
			t.Errorf("%s: bad label %+v", l.ID, l)
			continue
		}
		var in []fobs // the device's events in the window
		for _, e := range evs {
			if e.device == l.Device && e.t >= l.Start.UnixNano() && e.t <= l.End.UnixNano() {
				in = append(in, e)
			}
		}
		count := func(ok func(e fobs) bool) int {
			n := 0
			for _, e := range in {
				if ok(e) {
					n++
				}
			}
			return n
		}
		fromIP := func(e fobs) bool { return e.ip == l.IP }
		var n int
		switch l.Type {
		case AttackStolenAPIKey, AttackAuthFailures, AttackEnumeration, AttackClone, AttackStolenKeyNoGeo:
			n = count(fromIP) // addresses the device never uses
			for _, e := range evs {
				if e.device == l.Device && e.ip == l.IP && (e.t < l.Start.UnixNano() || e.t > l.End.UnixNano()) {
					t.Errorf("%s: an event from the attacker's %s outside the window", l.ID, l.IP)
					break
				}
			}
			if l.Type == AttackClone && count(func(e fobs) bool { return e.ip != l.IP }) == 0 {
				t.Errorf("%s: the real device does not keep calling during the clone", l.ID)
			}
		case AttackPrivilegedCommand:
			n = count(func(e fobs) bool {
				return strings.HasSuffix(e.cmd, "/reset") || strings.HasSuffix(e.cmd, "/firmware/url")
			})
		case AttackParamTampering:
			n = count(func(e fobs) bool { return e.hasArg && e.arg >= 45 })
		case AttackUploadExfil:
			n = count(func(e fobs) bool { return e.in > 50_000 })
		case AttackOddHours:
			n = count(func(e fobs) bool {
				return e.cmd == normalized(&d.cls.cmds[d.cls.owner], d.cls) || e.cmd == "PUBLISH locks/{id}/locked"
			})
			if !isNight(d, l.Start.UnixNano()) {
				t.Errorf("%s starts at %.1f h local time, not at night", l.ID, d.localHour(l.Start.UnixNano()))
			}
			if h := d.localHour(l.Start.UnixNano()); d.profile(profDay, l.Start.UnixNano()) != 0 {
				t.Errorf("%s: the owner's command is not night-free at %.1f h", l.ID, h)
			}
		case AttackFlood:
			n = l.Events
			if got := count(fromIP); got < l.Events {
				t.Errorf("%s: %d events from %s in the window, want at least %d", l.ID, got, l.IP, l.Events)
			}
		case AttackDownloadGrowth:
			c := &d.cls.cmds[d.cls.fetch]
			big := count(func(e fobs) bool { return e.cmd == normalized(c, d.cls) && float64(e.out) > 8*c.outMed })
			if big == 0 {
				t.Errorf("%s: no %s download reaches 8x its median size", l.ID, c.name)
			}
			n = l.Events
		default:
			t.Errorf("%s: unknown type %q", l.ID, l.Type)
		}
		if n != l.Events {
			t.Errorf("%s: %d attack events, the label says %d", l.ID, n, l.Events)
		}
	}
	for _, typ := range FieldAttackTypes {
		if seen[typ] != 1 {
			t.Errorf("attack type %s injected %d times, want 1 (150 devices)", typ, seen[typ])
		}
	}
	// No line of the legitimate traffic uses an attack-only command.
	victims := map[string]bool{}
	for _, l := range labels {
		victims[l.Device] = true
	}
	for _, e := range evs {
		if !victims[e.device] && (strings.HasSuffix(e.cmd, "/reset") || strings.HasSuffix(e.cmd, "/location") || e.cmd == "POST /v2/auth/token") {
			t.Fatalf("%s sends the attack-only %s", e.device, e.cmd)
		}
	}
}

// normalized returns c's command as the decoder normalizes it.
func normalized(c *fcmd, cls *fclass) string {
	if c.pre == "" {
		return c.method + " " + c.post
	}
	return c.method + " " + c.pre + "{id}" + c.post
}

// TestFieldNearMisses checks that the benign look-alikes are there, labelled,
// and look as described.
func TestFieldNearMisses(t *testing.T) {
	f, evs, _ := sharedField(t)
	near := f.NearMisses()
	kinds := map[string]int{}
	for _, l := range near {
		kinds[l.Type]++
		if l.End.Before(l.Start) || !slices.Contains(NearMissKinds, l.Type) {
			t.Errorf("bad near miss %+v", l)
		}
	}
	for _, k := range NearMissKinds {
		if kinds[k] == 0 && k != NearAuthOutage { // with Config.Entities only (TestCampaigns)
			t.Errorf("no near miss of kind %s", k)
		}
	}
	byDev := map[string][]fobs{}
	for _, e := range evs {
		byDev[e.device] = append(byDev[e.device], e)
	}
	for _, l := range near {
		if l.Device == "" {
			continue
		}
		dev := byDev[l.Device]
		switch l.Type {
		case NearRollout:
			var old, upd bool
			for _, e := range dev {
				old = old || (e.t < l.Start.UnixNano() && e.fw != fThermostat.newFw)
				upd = upd || (e.fw == fThermostat.newFw && e.cmd == "POST /v2/devices/{id}/health")
			}
			if !old || !upd {
				t.Errorf("%s: old firmware before %v, new command after %v", l.ID, old, upd)
			}
		case NearBorderCrossing:
			abroad := false
			for _, e := range dev {
				if e.t >= l.Start.UnixNano() && e.t < l.End.UnixNano() && e.country != dev[0].country {
					abroad = true
				}
			}
			if !abroad && l.End.Sub(l.Start) > 20*time.Minute {
				t.Errorf("%s: no event abroad", l.ID)
			}
		case NearJoined:
			if len(dev) == 0 || dev[0].t < l.Start.UnixNano() || !strings.HasSuffix(dev[0].cmd, "/activate") && !strings.HasSuffix(dev[0].cmd, "/hello") {
				t.Errorf("%s: the device's first event is not its provisioning at the join", l.ID)
			}
		case NearOwnerHome:
			var atk Label
			for _, a := range f.Labels() {
				if a.Device == l.Device {
					atk = a
				}
			}
			for _, e := range dev {
				if e.ip != atk.IP && e.t >= atk.Start.UnixNano() && e.t < l.Start.UnixNano() {
					t.Errorf("%s: the owner's device calls during its absence", l.ID)
					break
				}
			}
		}
	}
	// Backend incidents: most HTTP requests fail with 503 inside, few outside.
	for _, w := range f.incidents {
		var n, bad int
		for _, e := range evs {
			if e.t >= w[0] && e.t < w[1] && !strings.HasPrefix(e.cmd, "PUBLISH") {
				n++
				if e.status == 503 {
					bad++
				}
			}
		}
		if n == 0 || float64(bad) < 0.6*float64(n) {
			t.Errorf("incident %s: %d of %d HTTP requests answered 503", time.Unix(0, w[0]).UTC(), bad, n)
		}
	}
}

// TestFieldTraffic checks the structural properties of the field model:
// household NAT, carrier NAT, heavy camera uploads, per-country daily peaks,
// retries after 503.
func TestFieldTraffic(t *testing.T) {
	f, evs, _ := runField(t, Config{Model: ModelField, Seed: 9, Devices: 150, Duration: 24 * time.Hour})
	ipDevs := map[string]map[string]bool{}
	devIPs := map[string]map[string]bool{}
	var clips []float64
	for _, e := range evs {
		if ipDevs[e.ip] == nil {
			ipDevs[e.ip] = map[string]bool{}
		}
		ipDevs[e.ip][e.device] = true
		if devIPs[e.device] == nil {
			devIPs[e.device] = map[string]bool{}
		}
		devIPs[e.device][e.ip] = true
		if e.cmd == "POST /v2/devices/{id}/clips" {
			clips = append(clips, float64(e.in))
		}
	}
	shared := 0
	for _, ds := range ipDevs {
		if len(ds) >= 2 {
			shared++
		}
	}
	if shared < 10 {
		t.Errorf("%d addresses shared by several devices: household NAT missing", shared)
	}
	for i := range f.devs {
		d := &f.devs[i]
		if d.cls == fVehicle && d.joinAt == f.start && d.abroadStart == 0 {
			// 24 h behind a carrier NAT that moves every 35-55 min.
			if n := len(devIPs[d.id]); n < 20 || n > 45 {
				t.Errorf("vehicle %s used %d addresses in 24 h; want about 24 hours / 45 min", d.id, n)
			}
		}
	}
	if m := median(clips); len(clips) < 100 || m < 1e6 {
		t.Errorf("%d camera clips with a median of %.0f bytes in; want many, of more than 1 MB", len(clips), m)
	}
	// Owner commands never at night, local time; the two daily peaks are where
	// the country has them.
	night := 0
	for _, e := range evs {
		if e.cmd == "PUT /v2/devices/{id}/target" || e.cmd == "PUBLISH locks/{id}/unlocked" {
			for i := range f.devs {
				if f.devs[i].id == e.device && f.devs[i].profile(profDay, e.t) == 0 {
					night++
				}
			}
		}
	}
	if night > 0 {
		t.Errorf("%d owner commands at night (local time)", night)
	}
	// Retries after a 503: the same device sends the same command again within 130 s.
	last := map[string]fobs{}
	var failed, retried int
	for _, e := range evs {
		if p, ok := last[e.device]; ok && p.status == 503 {
			failed++
			if p.cmd == e.cmd && e.t-p.t <= 130*int64(time.Second) {
				retried++
			}
		}
		last[e.device] = e
	}
	if failed == 0 || float64(retried) < 0.5*float64(failed) {
		t.Errorf("%d of %d 503s followed by a retry of the same command", retried, failed)
	}
}
