package sim

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// obs is what the tests keep of one decoded event.
type obs struct {
	t       int64
	device  string
	class   string
	ip      string
	country string
	fw      string
	cmd     string
	pathID  string // the device id in the path or topic, if any
	status  uint16
	auth    schemas.AuthOutcome
	nargs   uint8
	argName string  // the first argument's name, if any
	arg     float64 // and its value
}

// run generates cfg's whole stream, checks every line on the way (it decodes,
// it is in time order, its time matches) and returns the observations.
func run(t *testing.T, cfg Config) (*Sim, []obs) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("cannot create simulator: %s", err)
	}
	cfg = s.Config()
	var (
		d    schemas.Decoder
		ev   schemas.Event
		buf  []byte
		out  []obs
		prev int64
		raw  struct {
			Path  string `json:"path"`
			Topic string `json:"topic"`
		}
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
	start, end := cfg.Start.UnixNano(), cfg.Start.Add(cfg.Duration).UnixNano()
	for i := 0; ; i++ {
		line, ts, ok := s.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		if bytes.IndexByte(line, '\n') >= 0 {
			t.Fatalf("line %d contains a newline: %s", i, line)
		}
		if err := d.Decode(line, 1, uint32(i), ts.UnixNano(), &ev); err != nil {
			t.Fatalf("line %d does not decode: %s\n%s", i, err, line)
		}
		if ev.Time != ts.UnixNano() {
			t.Fatalf("line %d: Next returned time %s, the line says %s", i, ts, ev.EventTime())
		}
		if ev.Time < prev {
			t.Fatalf("line %d: time goes back from %s to %s", i, time.Unix(0, prev).UTC(), ts)
		}
		if ev.Time < start || ev.Time >= end {
			t.Fatalf("line %d: time %s is outside the run", i, ts)
		}
		prev = ev.Time
		if i%50 == 0 { // the slow path only for a sample
			if err := json.Unmarshal(line, &raw); err != nil {
				t.Fatalf("line %d is not JSON: %s", i, err)
			}
			if p := raw.Path + raw.Topic; strings.Contains(p, "{id}") {
				t.Fatalf("line %d has a normalized path %q: gateways log raw paths", i, p)
			}
		}
		if !strings.Contains(string(ev.Command), schemas.Placeholder) && !bytes.Equal(ev.Command, []byte("POST /v1/auth/token")) &&
			!bytes.Equal(ev.Command, []byte("GET /v1/account/devices")) && !bytes.Equal(ev.Command, []byte("CONNECT")) {
			t.Fatalf("line %d: command %q has no identifier", i, ev.Command)
		}
		if ev.Source == schemas.SourceUnknown || len(ev.SourceID) == 0 || len(ev.Tenant) == 0 || ev.IDMethod == schemas.IDUnknown ||
			len(ev.Class) == 0 || len(ev.Firmware) == 0 || !ev.ClientIP.IsValid() || !ev.Country.Known() || ev.ASN == 0 || ev.Auth == schemas.AuthUnknown {
			t.Fatalf("line %d lacks a field: %s", i, line)
		}
		o := obs{
			t: ev.Time, device: str(ev.Device), class: str(ev.Class), ip: ev.ClientIP.String(), country: ev.Country.String(),
			fw: str(ev.Firmware), cmd: str(ev.Command), status: ev.Status, auth: ev.Auth, nargs: ev.NArgs,
		}
		if ev.NArgs > 0 {
			o.argName, o.arg = str(ev.Args[0].Name), ev.Args[0].Value
		}
		o.pathID = pathID(line)
		if o.pathID != "" {
			o.pathID = str([]byte(o.pathID))
		}
		out = append(out, o)
	}
	if s.Emitted() != len(out) {
		t.Fatalf("Emitted() = %d, want %d", s.Emitted(), len(out))
	}
	if _, _, ok := s.Next(nil); ok {
		t.Fatalf("Next returned an event after the end")
	}
	return s, out
}

// pathID returns the segment after "/v1/devices/" or "devices/" in the path or topic.
func pathID(line []byte) string {
	for _, key := range []string{`"path":"/v1/devices/`, `"topic":"devices/`} {
		if i := bytes.Index(line, []byte(key)); i >= 0 {
			rest := line[i+len(key):]
			if j := bytes.IndexAny(rest, `/"`); j >= 0 {
				return string(rest[:j])
			}
		}
	}
	return ""
}

func smallConfig(seed int64) Config {
	cfg := DefaultConfig()
	cfg.Seed = seed
	cfg.Devices = 300
	cfg.Duration = time.Hour
	cfg.AttackStart = 0.5
	return cfg
}

func digest(t *testing.T, cfg Config) ([32]byte, []Label, int) {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var buf []byte
	for {
		line, _, ok := s.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		h.Write(line)
		h.Write([]byte{'\n'})
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, s.Labels(), s.Emitted()
}

func TestDeterminism(t *testing.T) {
	a, la, na := digest(t, smallConfig(7))
	b, lb, nb := digest(t, smallConfig(7))
	if a != b || na != nb {
		t.Fatalf("the same seed gave different streams (%d and %d events)", na, nb)
	}
	if !reflect.DeepEqual(la, lb) {
		t.Fatalf("the same seed gave different labels:\n%v\n%v", la, lb)
	}
	c, lc, _ := digest(t, smallConfig(8))
	if a == c {
		t.Fatalf("seeds 7 and 8 gave the same stream")
	}
	if reflect.DeepEqual(la, lc) {
		t.Fatalf("seeds 7 and 8 gave the same labels")
	}
}

// defaultRun is run(t, DefaultConfig()), generated once for the tests that
// read it (hundreds of thousands of events: over a minute under -race on a
// loaded machine).
var defaultRun struct {
	sync.Mutex
	s   *Sim
	evs []obs
}

// sharedDefaultRun returns run(t, DefaultConfig()), running it on first use;
// callers must not change what it returns.
func sharedDefaultRun(t *testing.T) (*Sim, []obs) {
	t.Helper()
	r := &defaultRun
	r.Lock()
	defer r.Unlock()
	if r.s == nil {
		r.s, r.evs = run(t, DefaultConfig())
	}
	return r.s, r.evs
}

// TestDefaultRun checks the default run end to end: size, decoding, time order,
// every attack type, the labels against the events, and the class grammars.
func TestDefaultRun(t *testing.T) {
	s, evs := sharedDefaultRun(t)
	if n := len(evs); n < 200_000 || n > 800_000 {
		t.Fatalf("the default run has %d events, want a few hundred thousand", n)
	}
	labels := s.Labels()
	checkLabels(t, s, labels, evs)
	checkGrammars(t, labels, evs)
	setpoints := checkArgs(t, labels, evs)
	thermostats := 0
	for i := range s.devs {
		if s.devs[i].cls == thermostat {
			thermostats++
		}
	}
	perDay := float64(setpoints) / (float64(thermostats) * s.Config().Duration.Hours() / 24)
	if perDay < 1 || perDay > 12 {
		t.Errorf("%d setpoints from %d thermostats in %s: %.1f per thermostat and day, want a few",
			setpoints, thermostats, s.Config().Duration, perDay)
	}
}

func TestNoAttacks(t *testing.T) {
	cfg := smallConfig(3)
	cfg.Attacks = false
	s, evs := run(t, cfg)
	if len(s.Labels()) != 0 {
		t.Fatalf("Attacks=false gave %d labels", len(s.Labels()))
	}
	checkGrammars(t, nil, evs)
	checkArgs(t, nil, evs)
	for _, e := range evs {
		if e.auth == schemas.AuthFailed && e.cmd == "POST /v1/auth/token" {
			t.Fatalf("credential stuffing without attacks: %+v", e)
		}
	}
}

func inWindow(l *Label, t int64) bool {
	return t >= l.Start.UnixNano() && t <= l.End.UnixNano()
}

// attackEvent reports whether e is one of l's events; for floods, whose events
// look like the device's own, it reports the flooded command.
func attackEvent(l *Label, e *obs) bool {
	if e.device != l.Device {
		return false
	}
	switch l.Type {
	case AttackStolenAPIKey, AttackAuthFailures:
		return e.ip == l.IP
	case AttackPrivilegedCommand:
		return e.cmd == "POST /v1/devices/{id}/unlock" || e.cmd == "POST /v1/devices/{id}/firmware"
	case AttackEnumeration:
		return e.pathID != "" && e.pathID != e.device
	case AttackFlood:
		return e.ip == l.IP && inWindow(l, e.t)
	case AttackParamTampering:
		return e.cmd == setpointCmd && e.nargs > 0 && !livable(e.arg)
	}
	return false
}

// setpointCmd is the thermostat's argument-carrying command, normalized.
const setpointCmd = "PUT /v1/devices/{id}/setpoint"

// livable reports whether a room setpoint (°C) is one a resident could want.
func livable(c float64) bool { return c >= 5 && c <= 35 }

func checkLabels(t *testing.T, s *Sim, labels []Label, evs []obs) {
	t.Helper()
	cfg := s.Config()
	attackFrom := cfg.Start.Add(time.Duration(float64(cfg.Duration) * cfg.AttackStart))
	types := map[string]int{}
	devices := map[string]bool{}
	for i := range labels {
		l := &labels[i]
		types[l.Type]++
		if devices[l.Device] {
			t.Errorf("%s: device %s is the victim of two attacks", l.ID, l.Device)
		}
		devices[l.Device] = true
		if l.Start.Before(attackFrom) || l.End.After(cfg.Start.Add(cfg.Duration)) || l.End.Before(l.Start) {
			t.Errorf("%s: window [%s, %s] is outside the attack period from %s", l.ID, l.Start, l.End, attackFrom)
		}
		if l.Tenant == "" || l.Device == "" || l.IP == "" || l.Description == "" || l.Events < 1 {
			t.Errorf("%s: incomplete label %+v", l.ID, l)
		}
		var n, inside, flagged int
		first, last := int64(-1), int64(-1)
		var home string
		for j := range evs {
			e := &evs[j]
			if e.device == l.Device && home == "" && !attackEvent(l, e) && e.ip != l.IP {
				home = e.country
			}
			if !attackEvent(l, e) {
				continue
			}
			n++
			if inWindow(l, e.t) {
				inside++
			}
			if first < 0 {
				first = e.t
			}
			last = e.t
			switch l.Type {
			case AttackPrivilegedCommand, AttackStolenAPIKey:
				flagged++
			case AttackParamTampering:
				if e.ip == l.IP && e.status == 200 {
					flagged++
				}
			case AttackAuthFailures:
				if e.auth == schemas.AuthFailed && e.status == 401 {
					flagged++
				}
			case AttackEnumeration:
				if e.status == 403 || e.status == 404 {
					flagged++
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no event matches the label", l.ID)
			continue
		}
		if l.Type != AttackFlood {
			if n != l.Events || inside != n {
				t.Errorf("%s: %d matching events, %d inside the window, the label says %d", l.ID, n, inside, l.Events)
			}
			if first != l.Start.UnixNano() || last != l.End.UnixNano() {
				t.Errorf("%s: events span [%s, %s], the label says [%s, %s]", l.ID,
					time.Unix(0, first).UTC(), time.Unix(0, last).UTC(), l.Start, l.End)
			}
		}
		switch l.Type {
		case AttackFlood:
			// The flood's events look like the device's own: compare rates.
			win := l.End.Sub(l.Start).Seconds()
			var before int
			for j := range evs {
				e := &evs[j]
				if e.device == l.Device && e.t < l.Start.UnixNano() && e.t >= cfg.Start.UnixNano() {
					before++
				}
			}
			rateIn := float64(n) / win
			rateBefore := float64(before) / l.Start.Sub(cfg.Start).Seconds()
			if n < l.Events || rateIn < 15*rateBefore {
				t.Errorf("%s: %d events in the window (label: %d), rate %.3f/s against %.4f/s before", l.ID, n, l.Events, rateIn, rateBefore)
			}
		case AttackStolenAPIKey:
			if l.APIKey == "" {
				t.Errorf("%s: no API key", l.ID)
			}
			for j := range evs {
				if e := &evs[j]; attackEvent(l, e) && e.country == home {
					t.Errorf("%s: the stolen key is used from the home country %s", l.ID, home)
					break
				}
			}
		case AttackEnumeration:
			if flagged < n*8/10 {
				t.Errorf("%s: only %d of %d enumeration requests were 403/404", l.ID, flagged, n)
			}
		case AttackAuthFailures:
			if flagged != n {
				t.Errorf("%s: %d of %d events are failed authentications", l.ID, flagged, n)
			}
		case AttackParamTampering:
			var before int // the victim's own traffic from the same address
			for j := range evs {
				if e := &evs[j]; e.device == l.Device && e.t < l.Start.UnixNano() && e.ip == l.IP {
					before++
				}
			}
			if flagged != n || before == 0 {
				t.Errorf("%s: %d of %d accepted setpoints from %s, %d earlier events of the device from there", l.ID, flagged, n, l.IP, before)
			}
		}
	}
	for _, typ := range AttackTypes {
		if types[typ] == 0 {
			t.Errorf("no %s attack in the run", typ)
		}
	}
}

// checkArgs checks the numeric arguments and returns how many legitimate
// setpoints the run has. Only a thermostat's setpoint carries one, temp, and
// always does; legitimate setpoints are livable, in 0.5 °C steps; those of
// param_tampering are further than detectors.ParamK scales (mean absolute
// deviation) from the legitimate ones' median, so that the command detector,
// once its class learned the range, judges them out of it.
func checkArgs(t *testing.T, labels []Label, evs []obs) int {
	t.Helper()
	var legit, tampered []float64
	for j := range evs {
		e := &evs[j]
		if (e.cmd == setpointCmd) != (e.nargs > 0) {
			t.Fatalf("%s event with command %q carries %d arguments", e.class, e.cmd, e.nargs)
		}
		if e.nargs == 0 {
			continue
		}
		if e.nargs != 1 || e.argName != "temp" || !strings.HasPrefix(e.class, ClassThermostat+"/") {
			t.Fatalf("%s setpoint with %d arguments, the first %q", e.class, e.nargs, e.argName)
		}
		if e.arg*2 != math.Trunc(e.arg*2) {
			t.Fatalf("setpoint %v °C is not in 0.5 °C steps", e.arg)
		}
		attack := slices.ContainsFunc(labels, func(l Label) bool { return attackEvent(&l, e) })
		switch {
		case attack:
			tampered = append(tampered, e.arg)
		case !livable(e.arg):
			t.Fatalf("legitimate setpoint of %v °C: %+v", e.arg, e)
		default:
			legit = append(legit, e.arg)
		}
	}
	if len(legit) < detectors.ParamMinEvents {
		return len(legit) // too few to know the range (a small run)
	}
	med := median(legit)
	var dev float64
	for _, v := range legit {
		dev += math.Abs(v - med)
	}
	dev /= float64(len(legit))
	t.Logf("%d legitimate setpoints: median %v °C, mean absolute deviation %.2f; %d tampered", len(legit), med, dev, len(tampered))
	for _, v := range tampered {
		if math.Abs(v-med) <= detectors.ParamK*dev {
			t.Errorf("tampered setpoint %v °C is within %v scales of %d legitimate ones (median %v, deviation %.2f)",
				v, detectors.ParamK, len(legit), med, dev)
		}
	}
	return len(legit)
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// grammar lists the normalized commands of each class's legitimate traffic.
func grammar(c *classSpec) map[string]bool {
	g := map[string]bool{}
	for i := range c.cmds {
		cmd := &c.cmds[i]
		if c.mqtt {
			g[schemas.NormalizeCommand(cmd.method, cmd.pre+"lock-000001"+cmd.post)] = true
			if cmd.pre == "" {
				g[schemas.NormalizeCommand(cmd.method, cmd.post)] = true
			}
			continue
		}
		if cmd.pre == "" {
			g[schemas.NormalizeCommand(cmd.method, cmd.post)] = true
		} else {
			g[schemas.NormalizeCommand(cmd.method, cmd.pre+"d-000001"+cmd.post)] = true
		}
	}
	return g
}

// checkGrammars checks that legitimate traffic stays within each class's
// grammar: in particular, meters never issue unlock or firmware outside attacks.
func checkGrammars(t *testing.T, labels []Label, evs []obs) {
	t.Helper()
	grammars := map[string]map[string]bool{}
	for _, c := range classes {
		grammars[c.class] = grammar(c)
	}
	hosting := map[string]bool{}
	for _, i := range hostingNets {
		hosting[networks[i].Country] = true
	}
	seen := map[string]map[string]int{}
	for j := range evs {
		e := &evs[j]
		attack := false
		for i := range labels {
			if attackEvent(&labels[i], e) {
				attack = true
				break
			}
		}
		if strings.HasPrefix(e.class, "meter/") && (strings.Contains(e.cmd, "unlock") || strings.Contains(e.cmd, "firmware")) && !attack {
			t.Fatalf("a meter issued %q outside an attack: %+v", e.cmd, e)
		}
		if attack {
			continue
		}
		if !grammars[e.class][e.cmd] {
			t.Fatalf("legitimate %s event with command %q outside its grammar", e.class, e.cmd)
		}
		if hosting[e.country] {
			t.Fatalf("legitimate event from a hosting country: %+v", e)
		}
		if e.pathID != "" && e.pathID != e.device {
			t.Fatalf("legitimate event addresses another device: %+v", e)
		}
		if seen[e.class] == nil {
			seen[e.class] = map[string]int{}
		}
		seen[e.class][e.cmd]++
	}
	for _, c := range classes {
		if len(evs) > 100_000 && len(seen[c.class]) < 2 { // a big run uses more than one command per class
			t.Errorf("class %s used only %v", c.class, seen[c.class])
		}
	}
}

// TestIrregularities checks the benign irregularities are there, so that false
// alerts can be counted: firmware updates, trips abroad, new DHCP leases,
// offline gaps, errors with retries, unlocks by locks.
func TestIrregularities(t *testing.T) {
	s, evs := sharedDefaultRun(t)
	labels := s.Labels()
	victim := map[string]bool{}
	for _, l := range labels {
		victim[l.Device] = true
	}
	fws := map[string]map[string]bool{}
	countries := map[string]map[string]bool{}
	ips := map[string]map[string]bool{}
	lastSeen := map[string]int64{}
	var gaps, errors5xx, unlocks int
	for j := range evs {
		e := &evs[j]
		if victim[e.device] {
			continue
		}
		for _, m := range []struct {
			set map[string]map[string]bool
			v   string
		}{{fws, e.fw}, {countries, e.country}, {ips, e.ip}} {
			if m.set[e.device] == nil {
				m.set[e.device] = map[string]bool{}
			}
			m.set[e.device][m.v] = true
		}
		if p, ok := lastSeen[e.device]; ok && e.t-p > int64(19*time.Minute) && !strings.HasPrefix(e.class, "vehicle/") {
			gaps++
		}
		lastSeen[e.device] = e.t
		if e.status >= 500 {
			errors5xx++
		}
		if e.cmd == "PUBLISH devices/{id}/unlock" {
			unlocks++
		}
	}
	count := func(m map[string]map[string]bool) int {
		n := 0
		for _, v := range m {
			if len(v) > 1 {
				n++
			}
		}
		return n
	}
	if n := count(fws); n < 3 || n > 40 {
		t.Errorf("%d devices changed firmware, want a few", n)
	}
	if n := count(countries); n < 1 || n > 10 {
		t.Errorf("%d legitimate devices changed country, want a rare few", n)
	}
	if n := count(ips); n < 10 || n > 100 {
		t.Errorf("%d legitimate devices changed IP, want about 1%%", n)
	}
	if gaps < 10 || gaps > 100 {
		t.Errorf("%d devices went offline for a while, want about 2%%", gaps)
	}
	if frac := float64(errors5xx) / float64(len(evs)); frac < 0.0005 || frac > 0.01 {
		t.Errorf("5xx fraction %.4f, want some noise", frac)
	}
	if unlocks == 0 {
		t.Errorf("no lock unlocked itself in 3 hours")
	}
}

// TestDailyCycle compares vehicles whose local time is morning with vehicles
// whose local time is night during the same UTC hours.
func TestDailyCycle(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Attacks = false
	cfg.Duration = 2 * time.Hour // 09-11 in JP, 01-03 in DE and FR
	s, evs := run(t, cfg)
	trips := map[string]int{}
	for j := range evs {
		if evs[j].cmd == "POST /v1/devices/{id}/trips" {
			trips[evs[j].country]++
		}
	}
	vehicles := map[string]int{}
	for i := range s.devs {
		if d := &s.devs[i]; d.cls == vehicle {
			vehicles[d.home.country]++
		}
	}
	day := float64(trips["JP"]) / float64(vehicles["JP"])
	night := float64(trips["DE"]+trips["FR"]) / float64(vehicles["DE"]+vehicles["FR"])
	if day < 5*night || day == 0 {
		t.Fatalf("trips per vehicle: %.3f in the JP morning, %.3f in the European night", day, night)
	}
}

func TestValidate(t *testing.T) {
	f := func(field string, mutate func(*Config)) {
		t.Helper()
		cfg := DefaultConfig()
		mutate(&cfg)
		err := cfg.Validate()
		if err == nil {
			t.Fatalf("%s: no error", field)
		}
		if !strings.Contains(err.Error(), field) {
			t.Fatalf("error %q does not name %s", err, field)
		}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), field) {
			t.Fatalf("New: error %v does not name %s", err, field)
		}
	}
	f("Devices", func(c *Config) { c.Devices = -1 })
	f("Devices", func(c *Config) { c.Devices = MaxDevices + 1 })
	f("Devices", func(c *Config) { c.Devices = 5 })
	f("Duration", func(c *Config) { c.Duration = -time.Hour })
	f("Duration", func(c *Config) { c.Duration = 20 * time.Minute })
	f("AttackStart", func(c *Config) { c.AttackStart = 1 })
	f("AttackStart", func(c *Config) { c.AttackStart = -0.5 })
	f("Start", func(c *Config) { c.Start = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) })

	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("the default config is invalid: %s", err)
	}
	small := Config{Devices: 5, Duration: time.Minute}
	if err := small.Validate(); err != nil {
		t.Fatalf("a small run without attacks is invalid: %s", err)
	}
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.Config(); c.Devices != DefaultDevices || c.Duration != DefaultDuration || !c.Start.Equal(DefaultStart) || c.Attacks {
		t.Fatalf("zero Config did not take the defaults: %+v", c)
	}
}

func TestLabelsRoundTrip(t *testing.T) {
	s, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteLabels(&b, s.Labels()); err != nil {
		t.Fatal(err)
	}
	if got, want := bytes.Count(b.Bytes(), []byte("\n")), len(s.Labels()); got != want {
		t.Fatalf("%d lines for %d labels", got, want)
	}
	back, err := ReadLabels(&b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(s.Labels()) {
		t.Fatalf("read %d labels, wrote %d", len(back), len(s.Labels()))
	}
	for i, l := range s.Labels() {
		if b := back[i]; b.ID != l.ID || b.Device != l.Device || !b.Start.Equal(l.Start) || !b.End.Equal(l.End) || b.IP != l.IP {
			t.Fatalf("label %d: wrote %+v, read %+v", i, l, b)
		}
	}
}

// TestSmallFleet runs the smallest fleet that hosts every attack.
func TestSmallFleet(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Devices = MinAttackDevices
	cfg.Duration = 40 * time.Minute
	cfg.AttackStart = 0.5
	s, evs := run(t, cfg)
	checkLabels(t, s, s.Labels(), evs)
	checkGrammars(t, s.Labels(), evs)
	checkArgs(t, s.Labels(), evs)
}
