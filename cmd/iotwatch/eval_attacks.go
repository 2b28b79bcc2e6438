package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// Defaults of `eval attacks`: 5000 devices (five attacks of each type) over 12
// hours, as long as the demo's run, so that slow devices (a meter: one request
// per 5 min) have a baseline before the attacks start (after 60% of the run).
// About 3.6 million events: 10-25 s on 2 cores.
const (
	evalAttackDevices = 5000
	evalAttackHours   = 12.0
)

// attackMatchRule states how evaluate (report.go) matches an alert to an
// attack; printed with the results so that the numbers can be read.
var attackMatchRule = fmt.Sprintf("an alert is on an attack when its device, API key or client IP is the label's "+
	"and its event time is in [label start, label end + %s]; an alert matching no label is false; "+
	"a decision is true when its alert is", alertGrace)

// attackTypeResult is one attack type's row.
type attackTypeResult struct {
	Type     string   `json:"type"`
	Injected int      `json:"injected"`
	Detected int      `json:"detected"`
	Recall   *float64 `json:"recall"` // null when none was injected
	// Time to detect: from the attack's first event to the first matching
	// alert, over the detected attacks (null when none was).
	TTDMedianS *float64 `json:"ttd_median_s"`
	TTDMaxS    *float64 `json:"ttd_max_s"`
	// Reasons counts, per detector/reason, the attacks of the type that an
	// alert with that reason matched: what detected them.
	Reasons map[string]int `json:"reasons"`
}

// falseAlert is an alert that matches no label.
type falseAlert struct {
	Time    time.Time `json:"time"`
	Device  string    `json:"device"`
	Score   float64   `json:"score"`
	Reasons string    `json:"reasons"`
}

// attackEvalResult is what `eval attacks` reports (the --json object).
type attackEvalResult struct {
	Devices     int                `json:"devices"`
	Hours       float64            `json:"hours"`
	Seed        int64              `json:"seed"`
	Attacks     bool               `json:"attacks"`
	Events      int                `json:"events"`
	Undecodable int                `json:"undecodable"`
	DeviceHours float64            `json:"device_hours"`
	Types       []attackTypeResult `json:"attack_types"`
	Alerts      int                `json:"alerts"`
	TrueAlerts  int                `json:"true_alerts"`
	FalseAlerts int                `json:"false_alerts"`
	// Precision is TrueAlerts/Alerts; null when there is no alert.
	Precision            *float64 `json:"precision"`
	FalsePer1000DevHours float64  `json:"false_alerts_per_1000_device_hours"`
	Decisions            int      `json:"decisions"`
	TrueDecisions        int      `json:"true_decisions"`
	FalseDecisions       int      `json:"false_decisions"`
	// FalseByReason counts false alerts by their reasons (detector/reason,
	// joined by "+").
	FalseByReason map[string]int `json:"false_alerts_by_reason"`
	// FalseList is every false alert, in event-time order, for reading
	// what the detectors got wrong.
	FalseList []falseAlert `json:"false_alert_list"`
	Matching  string       `json:"matching"`
	Plots     []string     `json:"plots,omitempty"`
}

func evalAttacks(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval attacks", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	o.register(fs, "", "")
	devices := fs.Int("devices", evalAttackDevices, "simulated devices (attacks per type: max(1, devices/1000))")
	hours := fs.Float64("hours", evalAttackHours, "event-time span of the simulated traffic, in hours (attacks start after 60% of it)")
	seed := fs.Int64("seed", 1, "seed of the simulated fleet and its attacks")
	attacks := fs.Bool("attacks", true, "inject the labelled attacks (false: a clean fleet, every alert is false)")
	plotDir := fs.String("plot", "", "write PNG plots to this directory: volume against the expected band for attacked devices and one normal device, and the fleet's score distribution")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval attacks [--devices N] [--hours H] [--seed S] [--plot DIR] [--json]

Runs the simulated fleet (internal/sim) with its labelled attacks through the same
decode → detectors → decide code as 'iotwatch replay', in one process, at full speed on
event time (no NATS, no ClickHouse), and prints per attack type the attacks injected and
detected (recall) and the time to detect (median and max), then the alerts' precision,
the false alerts per 1,000 device-hours and the decisions on true and false alerts.
The labels never reach the detectors. Progress goes to standard error.

Matching: %s.

Flags (the detector and decision flags of 'iotwatch run' apply; connection flags are ignored):
`, attackMatchRule)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if !(*hours > 0) || *hours > sim.MaxDuration.Hours() {
		return usageError{fmt.Errorf("cannot use --hours %v: must be in (0, %v]", *hours, sim.MaxDuration.Hours())}
	}
	fc := sim.DefaultConfig()
	fc.Devices, fc.Seed, fc.Attacks = *devices, *seed, *attacks
	fc.Duration = time.Duration(*hours * float64(time.Hour)).Truncate(time.Second)
	if err := fc.Validate(); err != nil {
		return simConfigError(err, "hours")
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	res, err := runAttackEval(ctx, cfg, fc, *plotDir, os.Stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("cannot write result: %w", err)
		}
		return nil
	}
	res.print(stdout)
	return nil
}

// replayStack is the in-process scoring stack that replay uses: the
// pipeline's (score.New, from the same configuration) with one worker.
type replayStack struct {
	stack   *score.Stack // fills what log lines lack (GeoIP), as the pipeline does
	w       *worker.Worker
	limiter *decide.Limiter
	model   *detectors.ClassModel
	capped  []schemas.Alert // process's buffer of the limiter's alerts
}

// process enriches ev from the GeoIP database, scores it and returns its
// alert and decision (either may be nil) and the alerts the block limiter
// released, which are valid until the next call.
func (st *replayStack) process(ev *schemas.Event, sc *schemas.Scored) (*schemas.Alert, *schemas.Decision, []schemas.Alert) {
	st.stack.Enrich(ev)
	alert, d := st.w.Process(ev, sc)
	st.capped = st.limiter.AppendAlerts(st.capped[:0])
	return alert, d, st.capped
}

func newReplayStack(cfg pipeline.Config) (*replayStack, error) {
	sc := cfg.ScoreConfig()
	sc.Workers = 1
	s, err := score.New(sc)
	if err != nil {
		return nil, usageError{err}
	}
	return &replayStack{stack: s, w: s.Workers[0], limiter: s.Limiter, model: s.Model}, nil
}

// progressEvery is how many events pass between two looks at the wall clock
// (for progress and cancellation).
const progressEvery = 1 << 16

// runAttackEval runs fc's fleet through the scoring stack of cfg and evaluates
// the alerts and decisions against the labels. With plotDir, it also writes
// the plots there. Progress lines go to progress about every 5 seconds.
func runAttackEval(ctx context.Context, cfg pipeline.Config, fc sim.Config, plotDir string, progress io.Writer) (*attackEvalResult, error) {
	fl, err := sim.New(fc)
	if err != nil {
		return nil, usageError{err}
	}
	fc = fl.Config()
	labels := fl.Labels()
	fo := cfg.Formats
	fo.Source = "eval"
	dec, err := formats.New(schemas.FormatJSON, fo)
	if err != nil {
		return nil, fmt.Errorf("cannot build the decoder: %w", err)
	}
	st, err := newReplayStack(cfg)
	if err != nil {
		return nil, err
	}
	var rec *plotRecorder
	if plotDir != "" {
		if rec, err = newPlotRecorder(fc, labels, st.model); err != nil {
			return nil, err
		}
	}

	var (
		alerts     []storedAlert
		decisions  []storedDecision
		ev         schemas.Event
		sc         schemas.Scored
		buf        []byte
		events     int
		bad        int
		seq        uint64
		start      = time.Now()
		lastReport = start
	)
	addAlert := func(a *schemas.Alert) {
		alerts = append(alerts, storedFromAlert(a))
		if rec != nil {
			rec.alert(a)
		}
	}
	for {
		line, _, ok := fl.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		seq++
		if seq%progressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if now := time.Now(); now.Sub(lastReport) >= 5*time.Second {
				lastReport = now
				done := float64(ev.Time-fc.Start.UnixNano()) / float64(fc.Duration)
				fmt.Fprintf(progress, "eval attacks: %3.0f%%  events %d  alerts %d  decisions %d  %.0f events/s\n",
					100*done, events, len(alerts), len(decisions), float64(events)/now.Sub(start).Seconds())
			}
		}
		if err := dec.Decode(line, seq, 0, 0, &ev); err != nil {
			bad++ // the simulator writes valid lines: counted and reported, never fatal
			continue
		}
		events++
		if rec != nil {
			rec.observe(&ev) // before Process: the fleet view as the worker's detectors see it
		}
		alert, d, capped := st.process(&ev, &sc)
		if rec != nil {
			rec.score(sc.Score)
		}
		if alert != nil {
			addAlert(alert)
		}
		if d != nil {
			decisions = append(decisions, storedFromDecision(d))
		}
		for i := range capped {
			addAlert(&capped[i])
		}
		// Silent devices, swept on event time as the live pipeline does
		// (replayStack.sweep, replay.go).
		st.sweep(func(a *schemas.Alert, d *schemas.Decision) {
			if a != nil {
				addAlert(a)
			}
			if d != nil {
				decisions = append(decisions, storedFromDecision(d))
			}
		})
	}
	fmt.Fprintf(progress, "eval attacks: scored %d events (%d undecodable) in %.1fs: %d alerts, %d decisions\n",
		events, bad, time.Since(start).Seconds(), len(alerts), len(decisions))

	res := summarize(evaluate(labels, alerts, decisions, fc.Devices, fc.Duration))
	res.Seed, res.Attacks, res.Events, res.Undecodable = fc.Seed, fc.Attacks, events, bad
	if rec != nil {
		if res.Plots, err = rec.write(plotDir); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// storedFromAlert and storedFromDecision give replayed results the shape the
// demo's report reads back from ClickHouse, so both are judged by evaluate.
func storedFromAlert(a *schemas.Alert) storedAlert {
	s := storedAlert{ID: a.ID, Device: a.Device, APIKey: a.APIKey, ClientIP: a.ClientIP, Severity: a.Severity,
		Time: a.Time, Score: a.Score}
	for _, r := range a.Reasons {
		s.Reasons = append(s.Reasons, r.Reason)
		s.Detectors = append(s.Detectors, r.Detector)
	}
	return s
}

func storedFromDecision(d *schemas.Decision) storedDecision {
	return storedDecision{ID: d.ID, AlertID: d.AlertID, Action: d.Action, Scope: d.Scope, Value: d.Value,
		Device: d.Device, Time: d.CreatedAt}
}

// summarize aggregates a report per attack type (in sim.AttackTypes order).
func summarize(r report) *attackEvalResult {
	res := &attackEvalResult{Devices: r.Devices, Hours: r.Duration.Hours(), Matching: attackMatchRule,
		Alerts: r.Alerts, FalseAlerts: len(r.FalseAlerts), Decisions: r.Decisions, FalseDecisions: r.FalseBlocks}
	res.DeviceHours = float64(r.Devices) * r.Duration.Hours()
	res.TrueAlerts = res.Alerts - res.FalseAlerts
	res.FalseByReason = map[string]int{}
	res.FalseList = []falseAlert{}
	for _, a := range r.FalseAlerts {
		res.FalseByReason[reasonKey(a)]++
		res.FalseList = append(res.FalseList, falseAlert{Time: a.Time, Device: a.Device, Score: a.Score, Reasons: reasonKey(a)})
	}
	slices.SortStableFunc(res.FalseList, func(a, b falseAlert) int { return a.Time.Compare(b.Time) })
	res.TrueDecisions = res.Decisions - res.FalseDecisions
	if res.Alerts > 0 {
		res.Precision = ptr(float64(res.TrueAlerts) / float64(res.Alerts))
	}
	if res.DeviceHours > 0 {
		res.FalsePer1000DevHours = float64(res.FalseAlerts) / res.DeviceHours * 1000
	}
	for _, typ := range sim.AttackTypes {
		t := attackTypeResult{Type: typ, Reasons: map[string]int{}}
		var ttds []float64
		for _, a := range r.Attacks {
			if a.Label.Type != typ {
				continue
			}
			t.Injected++
			for _, k := range a.Reasons {
				t.Reasons[k]++
			}
			if a.Detected {
				t.Detected++
				ttds = append(ttds, a.TTD.Seconds())
			}
		}
		if t.Injected > 0 {
			t.Recall = ptr(float64(t.Detected) / float64(t.Injected))
		}
		if len(ttds) > 0 {
			slices.Sort(ttds)
			n := len(ttds)
			t.TTDMedianS = ptr((ttds[(n-1)/2] + ttds[n/2]) / 2)
			t.TTDMaxS = ptr(ttds[n-1])
		}
		res.Types = append(res.Types, t)
	}
	return res
}

// reasonKey names an alert's reasons as detector/reason, joined by "+".
func reasonKey(a storedAlert) string {
	var b strings.Builder
	for i, r := range a.Reasons {
		if i > 0 {
			b.WriteByte('+')
		}
		if i < len(a.Detectors) {
			b.WriteString(a.Detectors[i] + "/")
		}
		b.WriteString(r)
	}
	return b.String()
}

func ptr(v float64) *float64 { return &v }

// fmtCounts prints counts as key=n, most frequent first, joined by sep; "-"
// when there are none.
func fmtCounts(counts map[string]int, sep string) string {
	if len(counts) == 0 {
		return "-"
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b string) int {
		if c := cmp.Compare(counts[b], counts[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(sep)
		}
		fmt.Fprintf(&b, "%s=%d", k, counts[k])
	}
	return b.String()
}

// fmtRatio prints an optional ratio; "n/a" stands for undefined (0/0).
func fmtRatio(p *float64) string {
	if p == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", *p)
}

func fmtSeconds(p *float64) string {
	if p == nil {
		return "-"
	}
	return time.Duration(math.Round(*p) * float64(time.Second)).String()
}

func (r *attackEvalResult) print(w io.Writer) {
	fmt.Fprintf(w, "Fleet: %d devices, %g h (%.0f device-hours), seed %d, attacks %v; %d events scored.\n\n",
		r.Devices, r.Hours, r.DeviceHours, r.Seed, r.Attacks, r.Events)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK TYPE\tINJECTED\tDETECTED\tRECALL\tTTD MEDIAN\tTTD MAX\tREASONS (ATTACKS)")
	for _, t := range r.Types {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", t.Type, t.Injected, t.Detected, fmtRatio(t.Recall),
			fmtSeconds(t.TTDMedianS), fmtSeconds(t.TTDMaxS), fmtCounts(t.Reasons, " "))
	}
	tw.Flush()
	precision := fmtRatio(r.Precision)
	if r.Precision == nil {
		precision += " (no alerts)"
	}
	fmt.Fprintf(w, "\nAlerts: %d, %d on attacks, %d false; precision %s; %.2f false alerts per 1,000 device-hours.\n",
		r.Alerts, r.TrueAlerts, r.FalseAlerts, precision, r.FalsePer1000DevHours)
	if len(r.FalseByReason) > 0 {
		fmt.Fprintf(w, "False alerts by reason: %s\n", fmtCounts(r.FalseByReason, " "))
	}
	fmt.Fprintf(w, "Decisions: %d, %d on true alerts, %d on false alerts.\n", r.Decisions, r.TrueDecisions, r.FalseDecisions)
	fmt.Fprintf(w, "Matching: %s.\n", r.Matching)
	for _, p := range r.Plots {
		fmt.Fprintf(w, "wrote %s\n", p)
	}
}
