// Package scenario runs golden scenario files against detectors: a tiny text DSL
// an analyst can read, in the style of cockroachdb/datadriven. It is test
// support: detector packages call RunDir from their tests.
//
// A file is a sequence of blocks separated by blank lines; lines starting with
// '#' before a block are comments. A block is one command line, a "----" line,
// and the expected output (no blank lines in it):
//
//	# a meter reporting every minute
//	device d-17 class=meter/x tenant=acme country=DE cmd="POST /v1/devices/d-17/readings"
//	----
//
//	replay every=60s count=120 jitter=5s
//	----
//	120 events, no findings
//
// Running the tests with -update rewrites the expected outputs with the actual
// ones, to be reviewed as a diff.
//
// Commands:
//
//	device ID [tenant=T] [class=C] [country=CC] [asn=N] [loc=LAT,LON] [ip=ADDR[|ADDR...]]
//	    [cmd="METHOD /path"] [status=N] [auth=ok|failed|none] [bytes=N (out)] [bytesin=N]
//	    [args="NAME=V ..."] [idby=METHOD] [ua="USER AGENT"]
//	    selects device ID (each device has its own state record) and sets the
//	    fields its next events carry; fields not given keep their previous value.
//	    args are the command's numeric arguments (schemas.Event.Args): V is a
//	    number, or LO..HI for a value drawn uniformly per event; args= clears
//	    them. Numeric query parameters in cmd ("?temp=90") are arguments too,
//	    as the decoders read them. ip is the client address; with several,
//	    separated by '|', events take them in turn (one identity used from
//	    two places at once); ip= clears it. idby is how the source identified
//	    the device (schemas.IDMethod's names: api_key, token, client_ip, ...;
//	    default unknown), ua its user agent (schemas.Event.Firmware): together
//	    they make a client that is no device identity (detectors.SubjectOf),
//	    whose findings decide keeps only if absolute (decide.KeepAbsolute).
//	replay every=D count=N [jitter=D] [cycle=D amp=F] [day=H1-H2:F] [errrate=F [errstatus=N]] [failrate=F] [FIELD=V...]
//	    emits N events of the current device at now+D, now+2D, ... and moves now
//	    to the last one. jitter moves each event time by up to ±D (events may then
//	    arrive out of order); cycle and amp modulate the rate as
//	    1+amp*sin(2π t/cycle) (a daily cycle); day=H1-H2:F multiplies the rate by
//	    F from hour H1 to hour H2 (UTC) of every day (a sharp daily step: a shop
//	    opening); errrate sets status errstatus (500)
//	    on that fraction of events, failrate sets auth=failed status=401. FIELD=V
//	    overrides a device field for these events only. In cmd, "{i}" is replaced
//	    by a number unique within the file (to address many resources), "{i%N}"
//	    by that number modulo N (to address N resources in turn).
//	    devices=K sends event i from device ID-(i mod K) instead (K devices
//	    with the current device's fields, each its own record: one campaign
//	    across a fleet); ips=M gives event i the address (i mod M) after the
//	    device's first ip (M addresses counting up: a botnet). With either,
//	    the first line says how many devices and addresses the events came
//	    from, and each finding line names its device (dev=ID).
//	burst ...
//	    the same as replay; it reads better for attacks.
//	incidents
//	    prints how the alerts raised so far group into incidents, as the
//	    pipeline groups them (package pipeline/incident): per incident, in
//	    the order they opened, its severity, alerts, devices, entities and
//	    reasons.
//	advance D
//	    moves the virtual clock forward by D.
//	evict
//	    drops the current device's state record: a cold start.
//	peers N [after="METHOD /path"] [FIELD=V...]
//	    teaches the fleet view that N other devices of the current device's class
//	    issued its command (or the cmd given): class knowledge counts distinct
//	    devices, so this sets up a class that knows a command. With after, each
//	    peer issued that command first and then cmd: the class also knows the
//	    transition.
//	seed N
//	    reseeds the random source used by jitter, errrate and failrate (default 1).
//
// Durations are Go durations plus a "d" (day) unit: 90s, 2h, 1d. Time starts at
// Epoch. replay prints "N events, M findings" and then each run of consecutive
// events with the same finding as its first event and, for runs longer than
// one, its last event:
//
//	t=+2h00m18s volume rate_spike score=0.52 observed=9.6 expected=0.50
//	t=+2h03m20s volume rate_spike score=1.00 observed=15 expected=0.45 (last of 92)
//
// Events are scored as the live pipeline scores them: by a worker of the
// pipeline's scoring stack (package score: the same record layout, class
// table and decision engine), driving every detector the Runner names, in
// name order, over one record per device. The worker learns every event into
// the device's record and the class table (which counts distinct devices and
// learns commands' argument ranges); a record silent for longer than
// score.DefaultIdleTTL of event time expires, as in the pipeline.
package scenario

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

var update = flag.Bool("update", false, "rewrite golden scenario files (testdata/*.txt) with the actual output")

// Epoch is the virtual time at which every scenario starts.
var Epoch = time.Date(2025, 1, 6, 0, 0, 0, 0, time.UTC)

// fields are the per-event values a device template carries.
type fields struct {
	tenant, device, class, country, cmd string
	args                                []argSpec
	status                              uint16
	auth                                schemas.AuthOutcome
	bytesIn, bytesOut                   uint64
	asn                                 uint32
	lat, lon                            float32
	ips                                 []netip.Addr
	idBy                                schemas.IDMethod
	ua                                  string
}

// argSpec is a scenario argument: a value, or a uniform draw in [lo, hi].
type argSpec struct {
	name   string
	lo, hi float64
}

// Runner executes scenario commands. It is not safe for concurrent use.
type Runner struct {
	stack   *score.Stack   // the live path's scoring stack, one worker
	w       *worker.Worker // stack.Workers[0]
	sc      schemas.Scored // the current event's findings
	devices map[string]fields
	cur     string // current device id
	now     time.Duration
	rng     *rand.Rand
	seq     uint64
	seen    map[string]int
	ev      schemas.Event
	index   map[string]int // device record key → its index in Steps
	steps   []Step         // what happened, when recording (Replay)
	rec     bool
	// alerts raised so far and the incidents they make (incidents).
	alerts    int
	grouper   *incident.Grouper
	incidents []schemas.Incident // the latest of each, in opening order
	incIndex  map[string]int
}

// Op is what a Step did.
type Op uint8

const (
	// OpScore: the detectors scored the event against the device's record,
	// then the class model learned it.
	OpScore Op = iota
	// OpLearn: as OpScore, but the findings were thrown away (a peer's event,
	// from peers).
	OpLearn
	// OpEvict: the device's record was zeroed (evict, or a peer's fresh
	// record); Event is empty.
	OpEvict
)

// Step is one thing a scenario did to the detectors' inputs, in order: the
// steps of a file, replayed from zero records and an empty class model
// (NewModel), each event observed by the detectors and then learned by the
// model (ClassModel.Learn with the record as it was before), give the
// findings the file gave. The conformance tests replay them (deterministic
// replay, no allocations) so that every detector is exercised on its own
// scenarios.
type Step struct {
	Op    Op
	Event schemas.Event
	// Record numbers the device record the step applies to (0, 1, ... in the
	// order the scenario first used each device, peers included).
	Record int
}

// NewModel returns an empty class model for specs, of the sizes a Runner's
// (the live path's) class table has.
func NewModel(specs ...detectors.Spec) *detectors.ClassModel {
	return detectors.NewClassModel(detectors.NewLayout(specs), detectors.NewClassTable(score.ClassCommands, score.Classes))
}

// New returns a Runner driving the named registered detectors, or all of them
// when no name is given.
func New(names ...string) (*Runner, error) {
	var specs []detectors.Spec
	if len(names) == 0 {
		specs = detectors.All()
	}
	for _, name := range names {
		s, ok := detectors.Lookup(name)
		if !ok {
			return nil, fmt.Errorf("cannot find detector %q: is its package imported?", name)
		}
		specs = append(specs, s)
	}
	if len(specs) == 0 {
		return nil, fmt.Errorf("cannot run scenarios: no detector is registered")
	}
	sort.Slice(specs, func(i, j int) bool { return specs[i].Name < specs[j].Name })
	sorted := make([]string, len(specs))
	for i, s := range specs {
		sorted[i] = s.Name
	}
	st, err := score.New(score.Config{Detectors: sorted})
	if err != nil {
		return nil, fmt.Errorf("cannot build the scoring stack: %w", err)
	}
	r := &Runner{
		stack:    st,
		w:        st.Workers[0],
		devices:  map[string]fields{},
		rng:      rand.New(rand.NewPCG(1, 0)),
		seen:     map[string]int{},
		index:    map[string]int{},
		grouper:  incident.New(incident.Config{}),
		incIndex: map[string]int{},
	}
	r.grouper.OnRetire(r.retire)
	return r, nil
}

// retire drops an incident merged into another (or renamed) from the list.
func (r *Runner) retire(inc *schemas.Incident) {
	if i, ok := r.incIndex[inc.ID]; ok {
		r.incidents[i] = *inc
	}
}

// group adds an alert (and the decision on it) to the incidents.
func (r *Runner) group(a *schemas.Alert, d *schemas.Decision) {
	if a == nil {
		return
	}
	r.alerts++
	decID := ""
	if d != nil && d.AlertID == a.ID {
		decID = d.ID
	}
	inc := r.grouper.Add(a, decID)
	if inc == nil {
		return
	}
	if i, ok := r.incIndex[inc.ID]; ok {
		r.incidents[i] = *inc
		return
	}
	r.incIndex[inc.ID] = len(r.incidents)
	r.incidents = append(r.incidents, *inc)
}

// printIncidents is the output of the incidents command.
func (r *Runner) printIncidents() string {
	var sb strings.Builder
	live := slices.DeleteFunc(slices.Clone(r.incidents), func(inc schemas.Incident) bool { return inc.MergedInto != "" })
	fmt.Fprintf(&sb, "%d %s in %d %s\n", r.alerts, plural(r.alerts, "alert"), len(live), plural(len(live), "incident"))
	for i, inc := range live {
		fmt.Fprintf(&sb, "incident %d: %s, %d %s, %d %s, first t=%s last t=%s, entities %s, reasons %s\n", i+1, inc.Severity,
			inc.Alerts, plural(inc.Alerts, "alert"), inc.Devices, plural(inc.Devices, "device"),
			formatOffset(inc.FirstSeen.Sub(Epoch)), formatOffset(inc.LastSeen.Sub(Epoch)),
			strings.Join(inc.Entities, ","), strings.Join(inc.Reasons, ","))
	}
	return sb.String()
}

// Steps returns every step of a Runner made by Replay, in order; nil for
// other Runners. The caller must not modify them.
func (r *Runner) Steps() []Step { return r.steps }

// recordOf returns the Steps record number of f's device.
func (r *Runner) recordOf(f *fields) int {
	key := f.tenant + "\x00" + f.device
	i, ok := r.index[key]
	if !ok {
		i = len(r.index)
		r.index[key] = i
	}
	return i
}

// record appends a step when recording; ev is copied.
func (r *Runner) record(op Op, f *fields, ev *schemas.Event) {
	if !r.rec {
		return
	}
	st := Step{Op: op, Record: r.recordOf(f)}
	if ev != nil {
		st.Event.CopyFrom(ev)
	}
	r.steps = append(r.steps, st)
}

// Seen returns how many findings each "detector/reason" produced so far.
func (r *Runner) Seen() map[string]int { return r.seen }

// Exec runs one command line and returns its output (lines ending in '\n').
func (r *Runner) Exec(line string) (string, error) {
	args, err := tokenize(line)
	if err != nil {
		return "", err
	}
	if len(args) == 0 {
		return "", fmt.Errorf("cannot run an empty command")
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "device":
		return "", r.device(args)
	case "replay", "burst":
		return r.replay(args)
	case "advance":
		if len(args) != 1 {
			return "", fmt.Errorf("cannot parse %q: want advance DURATION", line)
		}
		d, err := parseDuration(args[0])
		if err != nil {
			return "", err
		}
		r.now += d
		return "", nil
	case "evict":
		if r.cur == "" {
			return "", fmt.Errorf("cannot evict: no device selected")
		}
		f := r.devices[r.cur]
		r.evict(f)
		r.record(OpEvict, &f, nil)
		return "", nil
	case "peers":
		return r.peers(args)
	case "incidents":
		if len(args) != 0 {
			return "", fmt.Errorf("cannot parse %q: want incidents", line)
		}
		return r.printIncidents(), nil
	case "seed":
		if len(args) != 1 {
			return "", fmt.Errorf("cannot parse %q: want seed N", line)
		}
		n, err := strconv.ParseUint(args[0], 10, 64)
		if err != nil {
			return "", fmt.Errorf("cannot parse seed %q: %w", args[0], err)
		}
		r.rng = rand.New(rand.NewPCG(n, 0))
		return "", nil
	}
	return "", fmt.Errorf("cannot run unknown command %q", verb)
}

// peers teaches the fleet view that n other devices of the current device's
// class issued a command (the current device's, or cmd=...), as the worker
// would after seeing them. Class knowledge counts distinct devices, so this is
// how a scenario sets up a class that knows (or half knows) a command.
func (r *Runner) peers(args []string) (string, error) {
	if r.cur == "" || len(args) == 0 {
		return "", fmt.Errorf("cannot parse peers: want a device selected and peers N [cmd=\"METHOD /path\"]")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n <= 0 {
		return "", fmt.Errorf("cannot parse peers count %q: want a positive integer", args[0])
	}
	f := r.devices[r.cur]
	after, hasAfter := "", false
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		if k == "after" {
			after, hasAfter = v, true
			continue
		}
		if err := f.set(k, v); err != nil {
			return "", err
		}
	}
	for i := range n {
		p := f
		p.device = fmt.Sprintf("%s-peer-%d", f.device, i)
		// A peer teaches the class only: it starts from a fresh record, and
		// its findings and record are thrown away.
		r.evict(p)
		r.record(OpEvict, &p, nil)
		if hasAfter {
			a := p
			a.cmd = after
			r.fill(&a, r.now)
			r.learn(&p)
		}
		r.fill(&p, r.now)
		r.learn(&p)
		r.evict(p)
	}
	if hasAfter {
		return fmt.Sprintf("class %s: %d peers issued %s then %s\n", f.class, n, expand(after, 0), expand(f.cmd, 0)), nil
	}
	return fmt.Sprintf("class %s: %d peers issued %s\n", f.class, n, expand(f.cmd, 0)), nil
}

func (r *Runner) device(args []string) error {
	if len(args) == 0 || strings.Contains(args[0], "=") {
		return fmt.Errorf("cannot parse device command: want device ID [FIELD=V...]")
	}
	id := args[0]
	f, ok := r.devices[id]
	if !ok {
		f = fields{device: id, tenant: "acme", status: 200, auth: schemas.AuthOK}
	}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		if err := f.set(k, v); err != nil {
			return err
		}
	}
	r.devices[id] = f
	r.cur = id
	return nil
}

func (f *fields) set(k, v string) error {
	switch k {
	case "tenant":
		f.tenant = v
	case "class":
		f.class = v
	case "country":
		if v != "" && len(v) != 2 {
			return fmt.Errorf("cannot parse country %q: want two letters", v)
		}
		f.country = v
	case "cmd":
		f.cmd = v
	case "args":
		args, err := parseArgs(v)
		if err != nil {
			return err
		}
		f.args = args
	case "status":
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return fmt.Errorf("cannot parse status %q: %w", v, err)
		}
		f.status = uint16(n)
	case "bytes", "bytesin":
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("cannot parse %s %q: %w", k, v, err)
		}
		if k == "bytes" {
			f.bytesOut = n
		} else {
			f.bytesIn = n
		}
	case "idby":
		m, ok := parseIDMethod(v)
		if !ok {
			return fmt.Errorf("cannot parse idby %q: want one of schemas.IDMethod's names", v)
		}
		f.idBy = m
	case "ua":
		f.ua = v
	case "asn":
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(v), "AS"), 10, 32)
		if err != nil {
			return fmt.Errorf("cannot parse asn %q: %w", v, err)
		}
		f.asn = uint32(n)
	case "ip":
		f.ips = nil
		for a := range strings.SplitSeq(v, "|") {
			if a == "" {
				continue
			}
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("cannot parse ip %q: %w", a, err)
			}
			f.ips = append(f.ips, ip)
		}
	case "loc":
		la, lo, ok := strings.Cut(v, ",")
		lat, err1 := strconv.ParseFloat(la, 32)
		lon, err2 := strconv.ParseFloat(lo, 32)
		if !ok || err1 != nil || err2 != nil || lat < -90 || lat > 90 || lon < -180 || lon > 180 {
			return fmt.Errorf("cannot parse loc %q: want LAT,LON in degrees", v)
		}
		f.lat, f.lon = float32(lat), float32(lon)
	case "auth":
		switch v {
		case "ok":
			f.auth = schemas.AuthOK
		case "failed":
			f.auth = schemas.AuthFailed
		case "none":
			f.auth = schemas.AuthNone
		case "unknown":
			f.auth = schemas.AuthUnknown
		default:
			return fmt.Errorf("cannot parse auth %q: want ok, failed, none or unknown", v)
		}
	default:
		return fmt.Errorf("cannot set unknown field %q", k)
	}
	return nil
}

// evict drops f's device's record from the worker's state table: its next
// event finds no history.
func (r *Runner) evict(f fields) {
	var ev schemas.Event
	ev.SetDevice([]byte(f.tenant), []byte(f.device))
	r.w.Table().Delete(ev.DeviceKey, ev.DeviceAlt)
}

// run is a series of consecutive events with the same finding.
type run struct {
	key         string
	first, last string
	n           int
	lastEvent   int
}

// dayStep multiplies a replay's rate by factor from hour from to hour to
// (UTC, to > from) of every day; the zero value is no step.
type dayStep struct {
	from, to int
	by       float64
}

// parseDayStep parses H1-H2:F.
func parseDayStep(v string) (dayStep, error) {
	hours, f, ok := strings.Cut(v, ":")
	h1, h2, ok2 := strings.Cut(hours, "-")
	if !ok || !ok2 {
		return dayStep{}, fmt.Errorf("want H1-H2:FACTOR")
	}
	var d dayStep
	var err1, err2, err3 error
	d.from, err1 = strconv.Atoi(h1)
	d.to, err2 = strconv.Atoi(h2)
	d.by, err3 = strconv.ParseFloat(f, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return dayStep{}, err
	}
	if d.from < 0 || d.to > 24 || d.from >= d.to || !(d.by > 0) {
		return dayStep{}, fmt.Errorf("want 0 <= H1 < H2 <= 24 and FACTOR > 0")
	}
	return d, nil
}

// factor returns the rate multiplier at t.
func (d dayStep) factor(t time.Time) float64 {
	if h := t.UTC().Hour(); d.by > 0 && h >= d.from && h < d.to {
		return d.by
	}
	return 1
}

func (r *Runner) replay(args []string) (string, error) {
	if r.cur == "" {
		return "", fmt.Errorf("cannot replay: no device selected")
	}
	f := r.devices[r.cur]
	var (
		every, jitter, cycle time.Duration
		count                = -1
		amp, errRate, fRate  float64
		day                  dayStep
		errStatus            = uint16(500)
		nDevs, nIPs          = 1, 1
		err                  error
	)
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return "", fmt.Errorf("cannot parse argument %q: want KEY=VALUE", a)
		}
		switch k {
		case "every":
			every, err = parseDuration(v)
		case "jitter":
			jitter, err = parseDuration(v)
		case "cycle":
			cycle, err = parseDuration(v)
		case "count":
			count, err = strconv.Atoi(v)
		case "amp":
			amp, err = strconv.ParseFloat(v, 64)
		case "day":
			day, err = parseDayStep(v)
		case "errrate":
			errRate, err = strconv.ParseFloat(v, 64)
		case "failrate":
			fRate, err = strconv.ParseFloat(v, 64)
		case "errstatus":
			var n uint64
			n, err = strconv.ParseUint(v, 10, 16)
			errStatus = uint16(n)
		case "devices", "ips":
			n, perr := strconv.Atoi(v)
			if perr != nil || n < 1 {
				err = fmt.Errorf("want a count >= 1")
			} else if k == "devices" {
				nDevs = n
			} else {
				nIPs = n
			}
		default:
			err = f.set(k, v)
		}
		if err != nil {
			return "", fmt.Errorf("cannot parse argument %q: %w", a, err)
		}
	}
	if every <= 0 || count < 0 {
		return "", fmt.Errorf("cannot replay: want every=DURATION>0 and count=N")
	}
	if amp < 0 || amp >= 1 || (amp > 0 && cycle <= 0) {
		return "", fmt.Errorf("cannot replay: amp must be in [0,1) and needs cycle=DURATION")
	}
	if nIPs > 1 && len(f.ips) == 0 {
		return "", fmt.Errorf("cannot replay: ips=N needs the device's first ip to count up from")
	}
	spread := nDevs > 1 || nIPs > 1
	devs, addrs := map[string]bool{}, map[netip.Addr]bool{}
	var (
		runs     []*run
		open     = map[string]*run{}
		findings int
	)
	for i := range count {
		gap := float64(every)
		if amp > 0 {
			phase := 2 * math.Pi * float64(r.now%cycle) / float64(cycle)
			gap /= 1 + amp*math.Sin(phase)
		}
		gap /= day.factor(Epoch.Add(r.now))
		r.now += time.Duration(gap)
		t := r.now
		if jitter > 0 {
			t += time.Duration((r.rng.Float64()*2 - 1) * float64(jitter))
		}
		e := f
		if errRate > 0 && r.rng.Float64() < errRate {
			e.status = errStatus
		}
		if fRate > 0 && r.rng.Float64() < fRate {
			e.status, e.auth = 401, schemas.AuthFailed
		}
		if nDevs > 1 {
			e.device = f.device + "-" + strconv.Itoa(i%nDevs)
		}
		if nIPs > 1 {
			a := f.ips[0]
			for range i % nIPs {
				a = a.Next()
			}
			e.ips = []netip.Addr{a}
		}
		r.seq++
		r.fill(&e, t)
		devs[e.device] = true
		if r.ev.ClientIP.IsValid() {
			addrs[r.ev.ClientIP] = true
		}
		// The worker scores the event and learns it (the device's record and
		// the class table), as in the live pipeline, and decides on it.
		r.group(r.w.Process(&r.ev, &r.sc))
		r.record(OpScore, &e, &r.ev)
		for _, fd := range r.sc.Reasons() {
			findings++
			name := fd.Detector
			key := name + "/" + fd.Reason
			r.seen[key]++
			line := formatFinding(t, name, fd)
			if spread {
				line = strings.Replace(line, " ", " dev="+e.device+" ", 1)
			}
			if ru := open[key]; ru != nil && ru.lastEvent == i-1 {
				ru.last, ru.n, ru.lastEvent = line, ru.n+1, i
				continue
			}
			ru := &run{key: key, first: line, n: 1, lastEvent: i}
			open[key] = ru
			runs = append(runs, ru)
		}
	}
	var sb strings.Builder
	events := fmt.Sprintf("%d %s", count, plural(count, "event"))
	if spread {
		events += fmt.Sprintf(" from %d %s and %d %s", len(devs), plural(len(devs), "device"), len(addrs), plural(len(addrs), "address"))
	}
	switch findings {
	case 0:
		fmt.Fprintf(&sb, "%s, no findings\n", events)
	case 1:
		fmt.Fprintf(&sb, "%s, 1 finding\n", events)
	default:
		fmt.Fprintf(&sb, "%s, %d findings\n", events, findings)
	}
	for _, ru := range runs {
		sb.WriteString(ru.first)
		sb.WriteByte('\n')
		if ru.n > 1 {
			fmt.Fprintf(&sb, "%s (last of %d)\n", ru.last, ru.n)
		}
	}
	return sb.String(), nil
}

// learn runs r.ev, an event of the peer p, through the worker without
// deciding anything (its findings are thrown away): the peer's record and
// the class model learn it, as the worker learns every event.
func (r *Runner) learn(p *fields) {
	r.w.Learn(&r.ev)
	r.record(OpLearn, p, &r.ev)
}

// parseArgs parses "NAME=V NAME=LO..HI ...".
func parseArgs(v string) ([]argSpec, error) {
	var out []argSpec
	for _, a := range strings.Fields(v) {
		name, val, _ := strings.Cut(a, "=")
		lo, hi, isRange := strings.Cut(val, "..")
		l, err1 := strconv.ParseFloat(lo, 64)
		h, err2 := l, error(nil)
		if isRange {
			h, err2 = strconv.ParseFloat(hi, 64)
		}
		if !schemas.ValidArgName([]byte(name)) || err1 != nil || err2 != nil || h < l || len(out) == schemas.MaxArgs {
			return nil, fmt.Errorf("cannot parse args %q: want at most %d NAME=V or NAME=LO..HI", v, schemas.MaxArgs)
		}
		out = append(out, argSpec{name: name, lo: l, hi: h})
	}
	return out, nil
}

// fill builds r.ev from f at virtual time t, as the decoder would.
func (r *Runner) fill(f *fields, t time.Duration) {
	ev := &r.ev
	ev.Reset()
	ev.ID = r.seq
	ev.Time = Epoch.Add(t).UnixNano()
	ev.SetDevice([]byte(f.tenant), []byte(f.device))
	ev.SetClass([]byte(f.class))
	for _, a := range f.args {
		v := a.lo
		if a.hi > a.lo {
			v += r.rng.Float64() * (a.hi - a.lo)
		}
		ev.SetArg([]byte(a.name), v)
	}
	ev.SetRawCommand(nil, []byte(expand(f.cmd, r.seq))) // after the args, which its query does not override
	if len(f.country) == 2 {
		ev.Country = schemas.Country{f.country[0], f.country[1]}
	}
	ev.Status = f.status
	ev.Auth = f.auth
	ev.BytesIn, ev.BytesOut = f.bytesIn, f.bytesOut
	ev.ASN = f.asn
	ev.Lat, ev.Lon = f.lat, f.lon
	if len(f.ips) > 0 {
		ev.ClientIP = f.ips[r.seq%uint64(len(f.ips))]
	}
	ev.Protocol = schemas.ProtoHTTP
	ev.IDMethod = f.idBy
	ev.SetText(&ev.Firmware, []byte(f.ua))
}

// parseIDMethod returns the schemas.IDMethod named v.
func parseIDMethod(v string) (schemas.IDMethod, bool) {
	for m := schemas.IDUnknown; m.String() != "unknown" || m == schemas.IDUnknown; m++ {
		if m.String() == v {
			return m, true
		}
	}
	return schemas.IDUnknown, false
}

// expand replaces "{i}" in cmd with seq and "{i%N}" with seq modulo N.
func expand(cmd string, seq uint64) string {
	for {
		i := strings.Index(cmd, "{i")
		if i < 0 {
			return cmd
		}
		j := strings.IndexByte(cmd[i:], '}')
		if j < 0 {
			return cmd
		}
		v := seq
		if mod, ok := strings.CutPrefix(cmd[i+2:i+j], "%"); ok {
			if n, err := strconv.ParseUint(mod, 10, 64); err == nil && n > 0 {
				v = seq % n
			}
		} else if i+2 != i+j {
			return cmd
		}
		cmd = cmd[:i] + strconv.FormatUint(v, 10) + cmd[i+j+1:]
	}
}

func formatFinding(t time.Duration, name string, f schemas.Finding) string {
	obs, exp := formatNumber(f.Observed), formatNumber(f.Expected)
	if l := f.ObservedLabel.String(); l != "" {
		obs = l + "(" + obs + ")"
	}
	if l := f.ExpectedLabel.String(); l != "" {
		exp = l + "(" + exp + ")"
	}
	return fmt.Sprintf("t=%s %s %s score=%.2f observed=%s expected=%s", formatOffset(t), name, f.Reason, f.Score, obs, exp)
}

func formatNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a == math.Trunc(a) && a < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 0.01 || a == 0:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

// formatOffset formats an offset from Epoch as +1d02h03m04s, +2h00m05.5s, +3m05s, +45s.
func formatOffset(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	s := strconv.FormatFloat(d.Round(time.Millisecond).Seconds(), 'f', -1, 64)
	pad := func(v string) string {
		if i := strings.IndexByte(v, '.'); i == 1 || (i < 0 && len(v) == 1) {
			return "0" + v
		}
		return v
	}
	switch {
	case days > 0:
		return fmt.Sprintf("%s%dd%02dh%02dm%ss", sign, days, h, m, pad(s))
	case h > 0:
		return fmt.Sprintf("%s%dh%02dm%ss", sign, h, m, pad(s))
	case m > 0:
		return fmt.Sprintf("%s%dm%ss", sign, m, pad(s))
	}
	return sign + s + "s"
}

// parseDuration is time.ParseDuration with a leading day unit ("1d2h").
func parseDuration(s string) (time.Duration, error) {
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, fmt.Errorf("cannot parse duration %q: %w", s, err)
		}
		days, s = time.Duration(n)*24*time.Hour, s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("cannot parse duration %q: %w", s, err)
	}
	return days + d, nil
}

// tokenize splits a command line on spaces; double quotes group (key="a b").
func tokenize(line string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		quote bool
		inTok bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			quote, inTok = !quote, true
		case c == ' ' && !quote:
			if inTok {
				out = append(out, cur.String())
				cur.Reset()
				inTok = false
			}
		default:
			cur.WriteByte(c)
			inTok = true
		}
	}
	if quote {
		return nil, fmt.Errorf("cannot parse %q: unterminated quote", line)
	}
	if inTok {
		out = append(out, cur.String())
	}
	return out, nil
}

// block is one command of a scenario file and the text before it.
type block struct {
	pre  string // comments and blank lines before the command, verbatim
	line int    // 1-based line of the command
	cmd  string
	want string
}

// parse splits a scenario file into blocks and the trailing text.
func parse(path, text string) ([]block, string, error) {
	lines := strings.SplitAfter(text, "\n")
	var (
		blocks []block
		pre    strings.Builder
	)
	for i := 0; i < len(lines); i++ {
		l := strings.TrimRight(lines[i], "\n")
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			pre.WriteString(lines[i])
			continue
		}
		b := block{pre: pre.String(), line: i + 1, cmd: l}
		pre.Reset()
		if i+1 >= len(lines) || strings.TrimRight(lines[i+1], "\n") != "----" {
			return nil, "", fmt.Errorf("%s:%d: cannot parse block: want \"----\" after the command", path, i+1)
		}
		i += 2
		var want strings.Builder
		for ; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == "" {
				break // the blank line ends the block
			}
			want.WriteString(strings.TrimRight(lines[i], "\n"))
			want.WriteByte('\n')
		}
		b.want = want.String()
		blocks = append(blocks, b)
	}
	return blocks, pre.String(), nil
}

// RunFile runs the scenario file at path with a new Runner driving the named
// detectors (all when none is given), reports every block whose output differs
// from the expected one, and returns the Runner for further checks. With
// -update it rewrites the file instead.
func RunFile(t testing.TB, path string, names ...string) *Runner {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("cannot read scenario: %s", err)
	}
	blocks, tail, err := parse(path, string(data))
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(names...)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, b := range blocks {
		got, err := r.Exec(b.cmd)
		if err != nil {
			t.Fatalf("%s:%d: %s", path, b.line, err)
		}
		if !*update && got != b.want {
			t.Errorf("%s:%d: %s\n--- want\n%s--- got\n%s", path, b.line, b.cmd, b.want, got)
		}
		out.WriteString(b.pre)
		out.WriteString(b.cmd)
		out.WriteString("\n----\n")
		out.WriteString(got)
		out.WriteString("\n")
	}
	out.WriteString(tail)
	if *update && out.String() != string(data) {
		if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
			t.Fatalf("cannot rewrite scenario: %s", err)
		}
		t.Logf("rewrote %s", path)
	}
	return r
}

// Replay runs the scenario file at path like RunFile but ignores the expected
// outputs; it returns the Runner (for Seen and Steps) or the first error.
func Replay(path string, names ...string) (*Runner, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read scenario: %w", err)
	}
	blocks, _, err := parse(path, string(data))
	if err != nil {
		return nil, err
	}
	r, err := New(names...)
	if err != nil {
		return nil, err
	}
	r.rec = true
	for _, b := range blocks {
		if _, err := r.Exec(b.cmd); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, b.line, err)
		}
	}
	return r, nil
}

// RunDir runs every dir/*.txt scenario as a subtest named after the file.
// It fails when there is none, so that a misplaced testdata directory shows.
func RunDir(t *testing.T, dir string, names ...string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("cannot find scenarios: no %s", filepath.Join(dir, "*.txt"))
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".txt"), func(t *testing.T) {
			RunFile(t, p, names...)
		})
	}
}

func plural(n int, word string) string {
	switch {
	case n == 1:
		return word
	case strings.HasSuffix(word, "s"):
		return word + "es"
	}
	return word + "s"
}

// Updating reports whether the tests run with -update: golden files are being
// rewritten rather than checked. Other golden checks (a generated catalog) use it.
func Updating() bool { return *update }
