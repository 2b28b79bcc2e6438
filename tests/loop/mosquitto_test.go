package loop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	commanddet "github.com/iotwatch/iotwatch/detectors/command"
	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/internal/ship"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

var offenders = flag.Int("offenders", 8, "devices that publish to a command topic one after the other (offending log line → refused mosquitto_pub latency samples)")

// Parameters of the Mosquitto loop. The seeded history and the devices' live
// telemetry agree on the rate (one PUBLISH per second per device).
const (
	mqttSource     = "broker-1"
	mqttIdentity   = "username" // formats.Options.Identity: dynamic security disables usernames
	mqttKeyID      = "mosq-loop-1"
	mqttBlockTTL   = time.Minute // longer than the test: the refusal is not an expiry race
	telemetryEvery = time.Second
	devicePassword = "pw-"
)

// TestMosquittoClosedLoop closes the loop with a real Mosquitto 2 and its
// dynamic-security plugin:
//
//	devices (MQTT clients, mosquitto_pub) → Mosquitto (log_type all, log file)
//	  → ship.Run following the log (format mosquitto, source broker-1)
//	  → embedded NATS → pipeline (decoder identity "username", detectors,
//	    decide, signed decisions) → private ClickHouse + KV
//	  → the real `iotwatch enforce mosquitto` (built from cmd/iotwatch, a
//	    child process) → disableClient over $CONTROL → Mosquitto refuses the username
//
// Each offender is a device with a live connection publishing telemetry like
// the others, whose credentials work with mosquitto_pub; it then publishes
// once to a command topic it never used (devices/<id>/cmd/unlock,
// .../cmd/firmware, ...). The command detector scores that privileged_command_new 0.95 (a warm device, a
// privileged word, no other device of its class, a day old, issued it), the pipeline
// blocks the device (scope mqtt_username, value = the username), the enforcer
// disables the username, Mosquitto drops the device's connection, and a real
// `mosquitto_pub -u <dev> -P <pw>` is refused. The time from the offending
// publish (its log line is written as the broker receives it) to the first
// refused mosquitto_pub is logged as p50/p99 over -offenders devices; the
// steady devices keep their connections and publish throughout.
//
// Baselines: the command detector judges a device's commands only after 20
// events and 10 minutes of event time, and Mosquitto logs wall-clock seconds,
// so the test first publishes seedHistory (55 minutes) of synthetic history in Mosquitto's
// own log format (connect, disconnect, reconnect, then one telemetry PUBLISH
// per second and device) on iotwatch.logs.mosquitto.seed, decoded by the same
// decoder with the same options as the live log, and waits until the
// pipeline has scored it. Everything after that is real traffic.
func TestMosquittoClosedLoop(t *testing.T) {
	var watchDirs []string
	t.Cleanup(func() { // registered first: runs after every process was stopped
		for _, d := range watchDirs {
			if pids := mosquittotest.ProcessesMentioning(d); len(pids) > 0 {
				t.Errorf("processes left after the test (command line mentions %s): %v", d, pids)
			}
		}
	})
	b := mosquittotest.Start(t) // fails when mosquitto, mosquitto_ctrl or the plugin is missing
	watchDirs = append(watchDirs, b.Dir)
	mosquittotest.Tool(t, "mosquitto_pub")
	if _, err := chserver.Available(); err != nil {
		t.Fatalf("the closed-loop test needs a real ClickHouse (run `make deps`): %v", err)
	}
	binDir := t.TempDir()
	watchDirs = append(watchDirs, binDir)
	iotwatch := buildIotwatch(t, binDir)

	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// Servers: private ClickHouse, embedded NATS.
	sv := startServers(t, ctx, log, "loop-mosquitto-test", "loop_mqtt")
	nc, js := sv.nc, sv.js

	// Decisions as the pipeline publishes them, and the enforcer's receipts,
	// by username, with their arrival times.
	type seen[T any] struct {
		v  T
		at time.Time
	}
	var evMu sync.Mutex
	decisions := map[string]seen[schemas.Decision]{}
	receipts := map[string]seen[schemas.ApplyReceipt]{}
	var otherDecisions []schemas.Decision
	decSub, err := nc.Subscribe(schemas.SubjectDecisionsPrefix+".>", func(m *nats.Msg) {
		var d schemas.Decision
		if json.Unmarshal(m.Data, &d) != nil {
			return
		}
		evMu.Lock()
		defer evMu.Unlock()
		if d.Action != schemas.ActionBlock || d.Scope != schemas.ScopeMQTTUsername {
			otherDecisions = append(otherDecisions, d)
			return
		}
		if _, ok := decisions[d.Value]; !ok {
			decisions[d.Value] = seen[schemas.Decision]{d, time.Now()}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { decSub.Unsubscribe() })
	recSub, err := nc.Subscribe(schemas.SubjectDecisionsApplied, func(m *nats.Msg) {
		var r schemas.ApplyReceipt
		if json.Unmarshal(m.Data, &r) != nil || r.Action != schemas.ActionBlock || r.Outcome() != schemas.ReceiptApplied {
			return
		}
		evMu.Lock()
		if _, ok := receipts[r.Value]; !ok {
			receipts[r.Value] = seen[schemas.ApplyReceipt]{r, time.Now()}
		}
		evMu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recSub.Unsubscribe() })

	// Signing key: the pipeline signs with the private half, the enforcer
	// trusts the public file.
	keyDir := t.TempDir()
	privFile, pubFile, err := schemas.GenerateKey(mqttKeyID)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"k.key": privFile, "k.pub": pubFile, "admin.pw": []byte(mosquittotest.AdminPassword + "\n")} {
		if err := os.WriteFile(filepath.Join(keyDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	keyID, priv, err := schemas.LoadPrivateKey(filepath.Join(keyDir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}

	// The pipeline: Mosquitto devices identified by username.
	fopts := formats.Options{Identity: mqttIdentity, Tenant: tenant}
	dc := decide.DefaultConfig()
	dc.BlockTTL, dc.MaxBlockTTL = mqttBlockTTL, mqttBlockTTL
	p := sv.runPipeline(t, ctx, log, dc, keyID, priv, fopts)

	// Devices: broker clients with the device role, and their history.
	steady := []string{"meter-s0", "meter-s1", "meter-s2", "meter-s3"}
	var offending []string
	for i := range *offenders {
		offending = append(offending, fmt.Sprintf("meter-f%02d", i))
	}
	all := append(slices.Clone(steady), offending...)
	for _, d := range all {
		b.AddClient(t, d, devicePassword+d)
	}
	seedEnd := time.Now().Truncate(time.Second)
	seeded := seedMosquitto(t, ctx, js, all, seedEnd)
	pollUntil(t, 30*time.Second, "pipeline scored the seeded history", func() bool { return p.M.Events.Load() >= uint64(seeded) })
	if n := p.M.Decisions.Load(); n != 0 {
		t.Fatalf("the seeded history produced %d decisions; want none", n)
	}

	// ship follows the broker's log file (written since the broker started).
	brokerLog := filepath.Join(b.Dir, "mosquitto.log")
	var shipStats ship.Stats
	shipCfg := ship.DefaultConfig()
	shipCfg.Inputs = []string{brokerLog}
	shipCfg.Subject = bus.LogSubject(schemas.FormatMosquitto, mqttSource)
	shipDone := make(chan error, 1)
	shipCtx, stopShip := context.WithCancel(ctx)
	go func() { shipDone <- ship.Run(shipCtx, js, shipCfg, &shipStats) }()
	t.Cleanup(func() {
		stopShip()
		if err := <-shipDone; err != nil {
			t.Errorf("ship: %v", err)
		}
	})

	// The real enforcer.
	enf := startEnforcer(t, iotwatch, sv.ns.URL(), b.Addr, keyDir)
	if runtime.GOOS == "linux" { // the leak check at the end must be able to see them
		for _, d := range watchDirs {
			if len(mosquittotest.ProcessesMentioning(d)) == 0 {
				t.Fatalf("no running process mentions %s: the leak check would be blind", d)
			}
		}
	}

	// Live devices: one connection each, telemetry every telemetryEvery.
	type liveDevice struct {
		c      *mqtt.Client
		paused atomic.Bool  // an offender leaves the rotation before its offence
		lastOK atomic.Int64 // wall time (Unix ns) of its last acknowledged telemetry
	}
	live := map[string]*liveDevice{}
	for _, d := range all {
		// The client id differs from the username: the decision must name the username.
		c, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: d + "-live", Username: d, Password: devicePassword + d})
		if err != nil {
			t.Fatalf("%s cannot connect: %v", d, err)
		}
		t.Cleanup(func() { c.Close() })
		live[d] = &liveDevice{c: c}
	}
	tel := startSteady(t, ctx, all, telemetryEvery, func(ctx context.Context, d string) error {
		ld := live[d]
		if ld.paused.Load() {
			return errSkip
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := ld.c.Publish(pctx, "devices/"+d+"/telemetry", []byte(`{"kwh":1.5}`), 1); err != nil {
			return err
		}
		ld.lastOK.Store(time.Now().UnixNano())
		return nil
	})

	// The live log decodes as the seeded history does: same device, class and
	// command keys, so the baselines seeded are the ones the live lines meet.
	checkSeedMatchesLive(t, brokerLog, fopts, steady[0])

	pub := func(dev, topic string) (string, error) { return b.Pub(t, dev, devicePassword+dev, topic, "1") }
	refusal := regexp.MustCompile(`(?i)not authori[sz]ed|refused`)
	var toRefused, toDecision, toReceipt []time.Duration
	for i, dev := range offending {
		ld := live[dev]
		topic := "devices/" + dev + "/" + commandTopic(i)
		ld.paused.Store(true)
		if out, err := pub(dev, "devices/"+dev+"/telemetry"); err != nil {
			t.Fatalf("%s: mosquitto_pub with its credentials fails before any offence: %v: %s", dev, err, out)
		}
		t0 := time.Now()
		if err := ld.c.Publish(ctx, topic, []byte(`{"now":true}`), 1); err != nil {
			t.Fatalf("%s: cannot publish to %q: %v", dev, topic, err)
		}
		var out string
		probes := 0
		pollUntil(t, hangBound, dev+" refused by the broker", func() bool {
			var err error
			out, err = pub(dev, "devices/"+dev+"/telemetry")
			probes++
			return err != nil
		})
		lat := time.Since(t0)
		// A probe connected when the username was disabled is disconnected
		// ("The connection was lost"): that is enforcement too, but the next
		// one must be refused at CONNECT.
		if !refusal.MatchString(out) {
			t.Logf("%s: probe %d was cut off by the disable: %q", dev, probes, strings.TrimSpace(out))
			if out2, err := pub(dev, "devices/"+dev+"/telemetry"); err == nil || !refusal.MatchString(out2) {
				t.Errorf("%s: mosquitto_pub after the disable: %v: %q; want a refusal (not authorised)", dev, err, out2)
			}
		}
		select {
		case <-ld.c.Done():
		case <-time.After(5 * time.Second):
			t.Errorf("%s: its live connection is still up 5 s after the broker refused it", dev)
		}
		evMu.Lock()
		d, okD := decisions[dev]
		r, okR := receipts[dev]
		evMu.Unlock()
		if !okD {
			t.Fatalf("%s: refused without a block decision seen on NATS", dev)
		}
		if d.v.Reason != commanddet.ReasonPrivilegedNew || d.v.Score < dc.BlockThreshold || d.v.Tenant != tenant || schemas.SignatureKeyID(&d.v) != keyID {
			t.Errorf("%s: decision %+v; want privileged_command_new, score >= %.2f, tenant %q, signed by %q", dev, d.v, dc.BlockThreshold, tenant, keyID)
		}
		if !okR {
			pollUntil(t, 5*time.Second, "apply receipt of "+dev, func() bool {
				evMu.Lock()
				defer evMu.Unlock()
				r, okR = receipts[dev]
				return okR
			})
		}
		// Mosquitto stamps its log lines in whole seconds from a clock it
		// caches per loop: a line can carry the second before the publish.
		if c := d.v.CreatedAt; c.Unix() < t0.Unix()-1 || c.After(time.Now()) {
			t.Errorf("%s: decision created at %s (the offending line's time); the publish was at %s", dev, c.Format(time.StampMilli), t0.Format(time.StampMilli))
		}
		if r.v.DecisionID != d.v.ID {
			t.Errorf("%s: receipt for decision %q; the pipeline issued %q", dev, r.v.DecisionID, d.v.ID)
		}
		toRefused = append(toRefused, lat)
		toDecision = append(toDecision, d.at.Sub(t0))
		toReceipt = append(toReceipt, r.at.Sub(t0))
		t.Logf("%s → %s: decision %s (%s, score %.2f) +%s, applied +%s, mosquitto_pub refused +%s (probe %d: %q)",
			dev, topic, d.v.ID, d.v.Reason, d.v.Score, d.at.Sub(t0).Round(time.Millisecond), r.at.Sub(t0).Round(time.Millisecond),
			lat.Round(time.Millisecond), probes, strings.TrimSpace(out))
	}

	// Steady devices kept their connections and publishing, were never
	// blocked, and mosquitto_pub with their credentials still works.
	lastRefused := time.Now()
	pollUntil(t, 5*time.Second, "telemetry of every steady device acknowledged after the last refusal", func() bool {
		for _, d := range steady {
			if live[d].lastOK.Load() < lastRefused.UnixNano() {
				return false
			}
		}
		return true
	})
	tel.halt()
	for _, d := range steady {
		select {
		case <-live[d].c.Done():
			t.Errorf("steady device %s lost its connection: %v", d, live[d].c.Err())
		default:
		}
		if out, err := pub(d, "devices/"+d+"/telemetry"); err != nil {
			t.Errorf("steady device %s: mosquitto_pub fails: %v: %s", d, err, out)
		}
	}
	tel.check(t, "telemetry", "publishes acknowledged")
	evMu.Lock()
	for _, s := range steady {
		if d, ok := decisions[s]; ok {
			t.Errorf("steady device %s was blocked: %+v", s, d.v)
		}
	}
	for _, d := range otherDecisions {
		t.Logf("other decision (not an mqtt_username block; acknowledged not_applicable by dynamic security): %s %s=%s %s %.2f", d.Action, d.Scope, d.Value, d.Reason, d.Score)
	}
	evMu.Unlock()

	st := enf.stop(t)
	t.Logf("offending publish → mosquitto_pub refused over %d devices (ship poll %s, pipeline flush %s): p50 %s, p99 %s, max %s",
		len(toRefused), shipCfg.Poll, 100*time.Millisecond, quantile(toRefused, 0.50), quantile(toRefused, 0.99), quantile(toRefused, 1))
	t.Logf("offending publish → decision on NATS: p50 %s, p99 %s; → apply receipt (username disabled): p50 %s, p99 %s",
		quantile(toDecision, 0.50), quantile(toDecision, 0.99), quantile(toReceipt, 0.50), quantile(toReceipt, 0.99))
	t.Logf("ship: %d lines in %d messages; pipeline: %d events, %d alerts, %d decisions; telemetry: %d publishes; enforcer: %s",
		shipStats.Lines.Load(), shipStats.Messages.Load(), p.M.Events.Load(), p.M.Alerts.Load(), p.M.Decisions.Load(), tel.ok.Load(), st)
}

// commandTopic returns the command topic offender i publishes to (after
// devices/<id>/): a privileged word, a different command for each offender,
// since the command detector scores a privileged command 0.95 only while no
// other device of the class issued it (one or two others: 0.75, alert only).
func commandTopic(i int) string {
	words := []string{"unlock", "firmware", "config", "reset", "ota", "credentials", "password", "fw"}
	targets := []string{"", "/front", "/back", "/garage", "/all"}
	return "cmd/" + words[i%len(words)] + targets[(i/len(words))%len(targets)]
}

// seedMosquitto publishes seedHistory of Mosquitto log lines for devices
// (each connects with its username, disconnects, reconnects, then publishes
// to devices/<id>/telemetry once a second) ending at end, after one connect
// of another device a day before (the class's age), on the mosquitto
// subject of source "seed", and returns how many events they decode to.
func seedMosquitto(t *testing.T, ctx context.Context, js jetstream.JetStream, devices []string, end time.Time) int {
	t.Helper()
	s := seeder{t: t, ctx: ctx, js: js, subject: bus.LogSubject(schemas.FormatMosquitto, "seed")}
	add := func(at time.Time, format string, args ...any) {
		s.addf("%d: "+format, append([]any{at.Unix()}, args...)...)
	}
	start := end.Add(-seedHistory)
	// The class is older than a day (the command detector blocks on a
	// privileged command new to a class only then): an earlier device
	// connected a day before.
	add(start.Add(-25*time.Hour), "New client connected from 127.0.0.1:39999 as founder (p2, c1, k30, u'founder').")
	for i, d := range devices {
		add(start, "New client connected from 127.0.0.1:%d as %s (p2, c1, k30, u'%s').", 40000+i, d, d)
		add(start.Add(seedEvery), "Client %s disconnected.", d)
		add(start.Add(2*seedEvery), "New client connected from 127.0.0.1:%d as %s (p2, c1, k30, u'%s').", 41000+i, d, d)
	}
	m := 0
	for at := start.Add(3 * seedEvery); !at.After(end); at = at.Add(seedEvery) {
		for _, d := range devices {
			m++
			add(at, "Received PUBLISH from %s (d0, q1, r0, m%d, 'devices/%s/telemetry', ... (11 bytes))", d, m%65535+1, d)
		}
	}
	s.flush()
	return s.n
}

// checkSeedMatchesLive decodes the broker's log up to device's first
// telemetry PUBLISH, as the pipeline does, and fails the test unless that
// event has the device key, class key, identity and command of the seeded
// history's telemetry.
func checkSeedMatchesLive(t *testing.T, brokerLog string, o formats.Options, device string) {
	t.Helper()
	decode := func(source string, lines [][]byte) (schemas.Event, bool) {
		o := o
		o.Source = source
		dec, err := formats.New(schemas.FormatMosquitto, o)
		if err != nil {
			t.Fatal(err)
		}
		var ev, last schemas.Event
		found := false
		for i, l := range lines {
			err := dec.Decode(l, 1, uint32(i), time.Now().UnixNano(), &ev)
			if err == nil && string(ev.Device) == device && bytes.HasPrefix(ev.Command, []byte("PUBLISH ")) {
				last, found = ev, true
			}
		}
		return last, found
	}
	var live schemas.Event
	pollUntil(t, 10*time.Second, "a telemetry line of "+device+" in the broker's log", func() bool {
		f, err := os.Open(brokerLog)
		if err != nil {
			return false
		}
		defer f.Close()
		var lines [][]byte
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, bytes.Clone(sc.Bytes()))
		}
		var ok bool
		live, ok = decode(mqttSource, lines)
		return ok
	})
	seedLines := [][]byte{
		fmt.Appendf(nil, "%d: New client connected from 127.0.0.1:40000 as %s (p2, c1, k30, u'%s').", time.Now().Unix(), device, device),
		fmt.Appendf(nil, "%d: Received PUBLISH from %s (d0, q1, r0, m1, 'devices/%s/telemetry', ... (11 bytes))", time.Now().Unix(), device, device),
	}
	seed, ok := decode("seed", seedLines)
	if !ok {
		t.Fatalf("the seeded telemetry line of %s does not decode to a PUBLISH of %s", device, device)
	}
	t.Logf("live telemetry event: device %q id_by %s tenant %q class %q command %q ip %s",
		live.Device, live.IDMethod, live.Tenant, live.Class, live.Command, live.ClientIP)
	if live.DeviceKey != seed.DeviceKey || live.ClassKey != seed.ClassKey || live.CommandID != seed.CommandID || live.IDMethod != seed.IDMethod {
		t.Fatalf("live and seeded telemetry differ: live device %q id_by %s class %q command %q; seeded device %q id_by %s class %q command %q",
			live.Device, live.IDMethod, live.Class, live.Command, seed.Device, seed.IDMethod, seed.Class, seed.Command)
	}
}

// buildIotwatch builds cmd/iotwatch into dir, with the race detector when
// this test binary has it (so that the build reuses the packages the test
// compiled), and returns the program's path.
func buildIotwatch(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go command to build cmd/iotwatch: %v", err)
	}
	out := filepath.Join(dir, "iotwatch")
	args := []string{"build", "-o", out}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" && s.Value == "true" {
				args = append(args, "-race")
			}
		}
	}
	cmd := exec.Command(goBin, append(args, "../../cmd/iotwatch")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build cmd/iotwatch: %v\n%s", err, b)
	}
	return out
}

// enforcer is a running `iotwatch enforce mosquitto`.
type enforcer struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	stdout  *syncBuffer
	stderr  string // log file
	stopped bool
}

// startEnforcer runs `iotwatch enforce mosquitto` against the broker at
// brokerAddr with the admin's password file and the public key in keyDir,
// and returns once it has started. It is stopped (SIGTERM, then SIGKILL) at
// the end of the test at the latest.
func startEnforcer(t *testing.T, bin, natsURL, brokerAddr, keyDir string) *enforcer {
	t.Helper()
	e := &enforcer{exited: make(chan struct{}), stdout: &syncBuffer{}, stderr: filepath.Join(keyDir, "enforcer.log")}
	logf, err := os.Create(e.stderr)
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command(bin, "enforce", "mosquitto", "--nats", natsURL, "--broker", brokerAddr,
		"--username", mosquittotest.AdminUser, "--password-file", filepath.Join(keyDir, "admin.pw"),
		"--keys", filepath.Join(keyDir, "k.pub"), "--enforcer-id", "mosq-loop", "--retry", "1s", "--log-level", "info")
	e.cmd.Stdout, e.cmd.Stderr = e.stdout, logf
	dieWithParent(e.cmd)
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("cannot start iotwatch enforce mosquitto: %v", err)
	}
	go func() { e.cmd.Wait(); logf.Close(); close(e.exited) }()
	t.Cleanup(func() { e.stop(t) })
	pollUntil(t, 10*time.Second, "iotwatch enforce mosquitto started", func() bool {
		select {
		case <-e.exited:
			b, _ := os.ReadFile(e.stderr)
			t.Fatalf("iotwatch enforce mosquitto exited at start: %s%s", e.stdout, b)
		default:
		}
		return strings.Contains(e.stdout.String(), "iotwatch enforce mosquitto: broker")
	})
	return e
}

// stop ends the enforcer (SIGTERM; SIGKILL after 10 s) and returns the
// counters of its final log line.
func (e *enforcer) stop(t *testing.T) string {
	if e.stopped {
		return ""
	}
	e.stopped = true
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("iotwatch enforce mosquitto did not stop within 10 s of SIGTERM")
		_ = e.cmd.Process.Kill()
		<-e.exited
	}
	logs, _ := os.ReadFile(e.stderr)
	if st := e.cmd.ProcessState; st != nil && !st.Success() {
		t.Errorf("iotwatch enforce mosquitto: %s\n%s", st, logs)
	}
	for l := range strings.Lines(string(logs)) {
		if strings.Contains(l, "enforce mosquitto stopped") {
			if i := strings.Index(l, "active="); i >= 0 {
				return strings.TrimSpace(l[i:])
			}
		}
	}
	return "(no final line)"
}

// syncBuffer is a bytes.Buffer safe for a child's output and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
