package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/chserver"
	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

func demoCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	o.register(fs, "", "")
	fc := sim.DefaultConfig()
	fc.Duration = 12 * time.Hour // long enough for slow devices (meters: one request per 5 min) to build baselines
	fs.IntVar(&fc.Devices, "devices", fc.Devices, "simulated devices")
	fs.DurationVar(&fc.Duration, "duration", fc.Duration, "event-time span of the simulated traffic (replayed as fast as the pipeline goes)")
	fs.Int64Var(&fc.Seed, "seed", fc.Seed, "seed of the simulated fleet and its attacks")
	fs.BoolVar(&fc.Attacks, "attacks", fc.Attacks, "inject the labelled attacks")
	dir := fs.String("dir", "var/demo", "directory for the demo's ClickHouse data, labels and report (kept after the demo)")
	lines := fs.Int("lines-per-message", 100, "events per NATS message (batching is the throughput lever)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up if the pipeline has not caught up by then")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch demo [flags]

Runs iotwatch end to end on one machine: an embedded NATS JetStream server, a private
clickhouse-server (unless --clickhouse is given), a simulated fleet of IoT devices with
labelled attacks (flood, stolen API key, privileged command, enumeration, auth failures),
the full pipeline, and a report of which attacks were detected, how fast, and how many
false alerts were raised. Labels are written to DIR/labels.jsonl and never reach the
detectors. The ClickHouse data is kept in DIR/clickhouse for exploring afterwards. With
--clickhouse, the results go to a new database iotwatch_demo_<time> unless --database is given.

Flags (pipeline flags as in 'iotwatch run'; --nats empty means embedded):
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !flagSet(fs, "geoip") {
		if _, err := os.Stat(demoGeoIP); err == nil {
			o.geoip = demoGeoIP // fetched by 'make geoip': fills what logs lack
		}
	}
	if err := fc.Validate(); err != nil {
		return simConfigError(err, "duration")
	}
	if *lines <= 0 || *lines > 10000 {
		return usageError{fmt.Errorf("cannot use --lines-per-message %d: must be in [1,10000]", *lines)}
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	if o.logLevel == "info" {
		// The demo prints its own progress; keep the pipeline's logs for problems.
		log, _ = newLogger(os.Stderr, "warn")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("cannot create --dir %q: %w", *dir, err)
	}
	say := func(format string, args ...any) { fmt.Fprintf(stdout, format+"\n", args...) }

	// Servers.
	if o.natsURL == "" {
		ns, err := natsserver.Start(natsserver.Options{Log: log})
		if err != nil {
			return fmt.Errorf("cannot start embedded NATS: %w", err)
		}
		defer ns.Shutdown()
		o.natsURL = ns.URL()
		say("NATS JetStream   embedded, %s (temporary store)", o.natsURL)
	}
	var chs *chserver.Server
	if o.clickhouse == "" {
		chDir := filepath.Join(*dir, "clickhouse")
		os.RemoveAll(chDir) // a fresh database for every demo
		say("ClickHouse       starting a private clickhouse-server in %s ...", chDir)
		chs, err = chserver.Start(ctx, chserver.Options{Dir: chDir, Log: log})
		if err != nil {
			return fmt.Errorf("cannot start a private ClickHouse (or pass --clickhouse DSN): %w", err)
		}
		defer chs.Stop()
		o.clickhouse = chs.DSN()
		say("ClickHouse       %s", o.clickhouse)
	} else if !flagSet(fs, "database") {
		// Someone's own server: never mix this run's results with earlier ones.
		o.database = "iotwatch_demo_" + time.Now().UTC().Format("20060102_150405")
		say("ClickHouse       %s, database %s (new for this run)", redactDSN(o.clickhouse), o.database)
	}
	st, err := openStack(ctx, &o, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()

	// Simulated fleet.
	fl, err := sim.New(fc)
	if err != nil {
		return usageError{err}
	}
	labels := fl.Labels()
	labelsPath := filepath.Join(*dir, "labels.jsonl")
	if err := writeLabels(labelsPath, labels); err != nil {
		return err
	}
	if o.geoip != "" {
		say("GeoIP            %s (fills countries that logs lack)", o.geoip)
	}
	say("Fleet            %d devices, %s of traffic from %s, seed %d, %d labelled attacks (%s)",
		fc.Devices, fc.Duration, fc.Start.Format(time.RFC3339), fc.Seed, len(labels), labelsPath)

	runCtx, stopPipeline := context.WithCancel(ctx)
	defer stopPipeline()
	runErr := make(chan error, 1)
	go func() { runErr <- st.p.Run(runCtx) }()

	start := time.Now()
	pubDone := make(chan publishResult, 1)
	go func() { pubDone <- publishFleet(ctx, st.js, fl, *lines) }()

	// Progress until the pipeline has caught up with everything published.
	var pub publishResult
	published := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastEvents uint64
	deadline := time.After(*timeout)
	for caughtUp := false; !caughtUp; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("the pipeline did not catch up within --timeout %v", *timeout)
		case err := <-runErr:
			return fmt.Errorf("pipeline stopped early: %w", err)
		case pub = <-pubDone:
			if pub.err != nil {
				return pub.err
			}
			published = true
		case <-tick.C:
			m := &st.p.M
			ev := m.Events.Load()
			lag := "-"
			if info, err := st.cons.Info(ctx); err == nil {
				lag = strconv.FormatUint(info.NumPending+uint64(info.NumAckPending), 10) + " msgs"
				caughtUp = published && info.NumPending == 0 && info.NumAckPending == 0
			}
			evTime := "-"
			if t := m.LastEvent.Load(); t > 0 {
				evTime = time.Unix(0, t).UTC().Format("15:04:05")
			}
			say("%5.0fs  events %8d  %7.0f ev/s  event time %s  alerts %4d  blocks %3d  dead-lettered %d  lag %s",
				time.Since(start).Seconds(), ev, float64(ev-lastEvents), evTime, m.Alerts.Load(), m.Decisions.Load(),
				m.DeadLettered.Load(), lag)
			lastEvents = ev
		}
	}
	stopPipeline()
	if err := <-runErr; err != nil {
		return err
	}
	elapsed := time.Since(start)
	m := &st.p.M
	say("\nScored %d events (%d messages, %d lines dead-lettered) in %.1fs: %.0f events/s end to end.",
		m.Events.Load(), pub.messages, m.DeadLettered.Load(), elapsed.Seconds(), float64(m.Events.Load())/elapsed.Seconds())

	// Report from what ClickHouse holds, as an analyst would see it.
	alerts, decisions, err := eval.QueryResults(ctx, o.clickhouse, o.database)
	if err != nil {
		return err
	}
	rep := eval.Evaluate(labels, alerts, decisions, fc.Devices, fc.Duration)
	rep.Print(stdout)
	if err := os.WriteFile(filepath.Join(*dir, "report.txt"), []byte(rep.String()), 0o644); err != nil {
		return fmt.Errorf("cannot write report: %w", err)
	}
	if chs != nil {
		say("\nExplore the results (the data stays in %s):", chs.Dir())
		say("  clickhouse-server --config-file=%s/config.xml >/dev/null 2>&1 &", chs.Dir())
		say("  %s --database %s --query \"SELECT device, severity, reasons, observed, expected FROM %s FINAL ORDER BY time\"",
			chs.ClientCommand(), o.database, schemas.TableAlerts)
		say("  (stop it afterwards with: pkill -f %s/config.xml)", chs.Dir())
	}
	return nil
}

// demoGeoIP is where 'make geoip' puts the country database.
const demoGeoIP = "var/geoip/geo-whois-asn-country.mmdb"

// simConfigError rewrites an error of sim.Config.Validate with the flags of
// demo and eval attacks; durationFlag is the flag that sets Config.Duration.
func simConfigError(err error, durationFlag string) error {
	return usageError{errors.New(strings.NewReplacer("invalid Config.Devices", "cannot use --devices",
		"invalid Config.Duration", "cannot use --"+durationFlag, "invalid Config.Start", "cannot use the simulation start",
		"invalid Config.AttackStart", "cannot use the attack start", "invalid Config.Model", "cannot use --model",
		"invalid Config.Entities", "cannot use --entities",
		"invalid Config.ThinFlood", "cannot use --thin-flood").Replace(err.Error()))}
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func writeLabels(path string, labels []sim.Label) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot create labels file: %w", err)
	}
	if err := sim.WriteLabels(f, labels); err != nil {
		f.Close()
		return fmt.Errorf("cannot write labels file %q: %w", path, err)
	}
	return f.Close()
}

type publishResult struct {
	messages int
	events   int
	err      error
}

// demoBadRecords are published among the fleet's traffic to show that bad input
// is dead-lettered with a reason and loses nothing else.
var demoBadRecords = [][]byte{
	[]byte(`{"ts":"2026-01-05T01:00:00Z","device":`),                      // truncated JSON
	[]byte(`{"ts":"2026-01-05T01:00:00Z","method":"GET","path":"/v1/x"}`), // no device
	[]byte(`{"ts":"1970-01-01T00:00:01Z","device":"therm-000001"}`),       // absurd timestamp
	[]byte("{\"ts\":\"2026-01-05T01:00:00Z\",\"device\":\"\xff\xfe\"}"),   // invalid UTF-8
}

// publishFleet publishes the simulator's events in messages of up to perMsg
// lines with async publishing (bounded by the client's pending limit) and msg ids.
func publishFleet(ctx context.Context, js jetstream.JetStream, fl *sim.Sim, perMsg int) publishResult {
	subject := bus.LogSubject(schemas.FormatJSON, "sim")
	var res publishResult
	buf := make([]byte, 0, perMsg*512)
	n := 0
	send := func() error {
		if n == 0 {
			return nil
		}
		data := make([]byte, len(buf))
		copy(data, buf)
		id := "sim-" + strconv.Itoa(res.messages)
		if _, err := js.PublishAsync(subject, data, jetstream.WithMsgID(id)); err != nil {
			return fmt.Errorf("cannot publish simulated logs: %w", err)
		}
		res.messages++
		buf, n = buf[:0], 0
		return nil
	}
	bad := 0
	for {
		if ctx.Err() != nil {
			res.err = ctx.Err()
			return res
		}
		line, _, ok := fl.Next(buf)
		if !ok {
			break
		}
		buf = append(line, '\n')
		n++
		res.events++
		if bad < len(demoBadRecords) && res.events%1000 == 0 {
			buf = append(append(buf, demoBadRecords[bad]...), '\n')
			bad++
		}
		if n >= perMsg {
			if res.err = send(); res.err != nil {
				return res
			}
		}
	}
	if res.err = send(); res.err != nil {
		return res
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		res.err = ctx.Err()
	case <-time.After(time.Minute):
		res.err = errors.New("cannot publish simulated logs: JetStream did not acknowledge within a minute")
	}
	return res
}
