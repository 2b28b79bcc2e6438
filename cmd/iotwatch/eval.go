package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline/decide"
)

// plotHelp ends the help of --plot in a binary that cannot plot (plot.go
// links the plotting stack under the build tag plot).
var plotHelp = " (only in a binary built with -tags plot: make build-plot)"

// evalCommands are the evaluations on labelled data: the simulated fleet's
// attacks, and data sets in a documented generic format (so that they work on
// any such data, not only ours). Package internal/eval runs them; here are
// their flags.
var evalCommands = []command{
	{"attacks", "run the simulated fleet's labelled attacks through the detectors and decide: recall, time to detect, precision", evalAttacks},
	{"web", "replay a generated NGINX log of people, crawlers, integrations, devices and attackers: benign addresses alerted and blocked, attackers caught, next to a signature tool", evalWeb},
	{"nab", "score time series (NAB layout: DIR/<category>/<file>.csv) with the volume model's core", evalNAB},
	{"sequences", "learn command sequences from a training file and score a test file (label<TAB>tokens)", evalSequences},
}

func evalCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(stdout, "Usage: iotwatch eval <evaluation> [flags]\n\nRuns a detector's model on labelled data and reports how it does.\n\nEvaluations:\n")
		for _, c := range evalCommands {
			fmt.Fprintf(stdout, "  %-10s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(stdout, "\nRun 'iotwatch eval <evaluation> --help' for its flags.\n")
		if len(args) == 0 {
			return usageError{fmt.Errorf("no evaluation given")}
		}
		return nil
	}
	for _, c := range evalCommands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	return usageError{fmt.Errorf("unknown evaluation %q", args[0])}
}

func evalAttacks(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval attacks", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	o.register(fs, "", "")
	devices := fs.Int("devices", eval.DefaultAttackDevices, "simulated devices (attacks per type: max(1, devices/1000))")
	hours := fs.Float64("hours", eval.DefaultAttackHours, "event-time span of the simulated traffic, in hours (attacks start after 60% of it)")
	seed := fs.Int64("seed", 1, "seed of the simulated fleet and its attacks")
	model := fs.String("model", sim.ModelBasic, fmt.Sprintf("traffic model of the simulated fleet, one of %q: %s is the one the detectors were tuned on (in-sample), %s an independent one they never saw", sim.Models, sim.ModelBasic, sim.ModelField))
	attacks := fs.Bool("attacks", true, "inject the labelled attacks (false: a clean fleet, every alert is false)")
	entities := fs.Bool("entities", false, "also inject the attacks spread over many devices and addresses ("+strings.Join(sim.EntityAttackTypes, ", ")+"), from their own random stream; off by default so that the other figures stay comparable")
	thin := fs.Bool("thin-flood", false, "with --entities, also inject "+sim.AttackThinFlood+": a distributed flood whose 1,000-1,400 bots share 5-8 /24s and 1-2 /48s and send 1-3 requests each, from its own random stream (the other attacks and figures are those without it)")
	plotDir := fs.String("plot", "", "write PNG plots to this directory: volume against the expected band for attacked devices and one normal device, and the fleet's score distribution"+plotHelp)
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	explainFalse := fs.Bool("explain-false", false, "after the result, list every false alert: its time, device, class, the near miss it fell on, and each finding's observed and expected values (with --json, the object's false_alert_list holds the same)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval attacks [--model NAME] [--devices N] [--hours H] [--seed S] [--entities [--thin-flood]] [--plot DIR] [--json] [--explain-false]

Runs the simulated fleet (internal/sim, model --model) with its labelled attacks through the same
decode → detectors → decide code as 'iotwatch replay', in one process, at full speed on
event time (no NATS, no ClickHouse), and prints per attack type the attacks injected and
detected (recall) and the time to detect (median and max), then the alerts' precision,
the false alerts per 1,000 device-hours and the decisions on true and false alerts.
With --model field, the false alerts are also counted per labelled near miss (a rollout,
a border crossing, a backend incident, an owner back home after a stolen-key use, a
household's new address, a device joining). The labels never reach the detectors. Progress goes to standard error.
With --json, the object also lists every false alert with its device's class and its explanations
(each finding's observed and expected values), for finding out why benign traffic alerted;
--explain-false prints the same list as a table after the result.

Alerts are grouped into incidents as the live pipeline groups them (pipeline/incident): the
result counts the incidents, the incidents made of false alerts only, and per attack type the
detected attacks whose alerts all fall into one incident (ONE INCIDENT).

With --entities, the fleet also carries attacks spread over many devices and addresses:
credential stuffing (one address, one failed login against each of 250-350 devices), a
distributed flood (1,000-1,500 new addresses on one route within minutes), a leaked API
key (used from 40-80 addresses) and a credential attack spread thin over one tenant (two
failed logins on each of 150-250 of its devices, every attempt from its own new address).
Their labels name every device and address involved; an alert detects one when it names one
of its devices, its address or key, or (an entity alert) the attacking address, its network,
the key, or the tenant an attack spreads over. Without --entities every figure is that of
the same seed before these attacks existed. With --entities, both models also carry the benign
counterpart of the tenant attack, a near miss: one tenant's authentication backend fails two
logins of each of its devices, from their usual addresses, within 5 minutes (auth_outage).

Matching: %s.

Flags (the detector and decision flags of 'iotwatch run' apply; connection flags are ignored):
`, eval.AttackMatchRule)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if *plotDir != "" && !eval.CanPlot() {
		return usageError{errors.New("cannot use --plot: this iotwatch is built without plotting; build it with -tags plot (make build-plot)")}
	}
	if !(*hours > 0) || *hours > sim.MaxDuration.Hours() {
		return usageError{fmt.Errorf("cannot use --hours %v: must be in (0, %v]", *hours, sim.MaxDuration.Hours())}
	}
	fc := sim.DefaultConfig()
	fc.Devices, fc.Seed, fc.Attacks, fc.Model, fc.Entities, fc.ThinFlood = *devices, *seed, *attacks, *model, *entities, *thin
	fc.Duration = time.Duration(*hours * float64(time.Hour)).Truncate(time.Second)
	if err := fc.Validate(); err != nil {
		return simConfigError(err, "hours")
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	res, err := eval.RunAttacks(ctx, cfg, fc, *plotDir, os.Stderr)
	if err != nil {
		return err
	}
	if err := printResult(stdout, res, *asJSON); err != nil {
		return err
	}
	if *explainFalse && !*asJSON {
		res.PrintFalse(stdout)
	}
	return nil
}

// printResult writes an evaluation's result to w: its table, or with asJSON
// the result as indented JSON.
func printResult(w io.Writer, res interface{ Print(io.Writer) }, asJSON bool) error {
	if !asJSON {
		res.Print(w)
		return nil
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		return fmt.Errorf("cannot write result: %w", err)
	}
	return nil
}

// evalNAB scores a data set in the layout of the Numenta Anomaly Benchmark
// (eval.NAB).
func evalNAB(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval nab", flag.ContinueOnError)
	fs.SetOutput(stdout)
	data := fs.String("data", "", "input directory: DIR/<category>/<file>.csv with columns timestamp,value")
	out := fs.String("out", "", "output directory: OUT/<category>/<file>.csv with columns timestamp,anomaly_score (with --cv: optional, the held-out scores)")
	cv := fs.Bool("cv", false, "choose the parameters by leave-one-category-out cross-validation over a small declared grid and print in-sample and left-out NAB scores")
	windows := fs.String("windows", "", "with --cv: NAB's combined_windows.json (default DIR/../labels/combined_windows.json)")
	profiles := fs.String("profiles", "", "with --cv: NAB's profiles.json (default DIR/../config/profiles.json)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval nab --data DIR --out DIR
       iotwatch eval nab --cv --data DIR [--out DIR] [--windows FILE] [--profiles FILE]

Feeds every DIR/<category>/<file>.csv (header with columns timestamp and value, one row
per interval, oldest first) through the volume model's core, one value per interval (its
surprise calibrated against the series' own history and capped by how novel the recent
stretch's shape is against the series' past, one alarm per episode), and
writes OUT/<category>/<file>.csv with the header timestamp,anomaly_score, one row per
input row, scores in [0,1]. One parameter set serves every file (no per-file tuning).
Timestamps may be "2006-01-02 15:04:05[.fraction]", RFC 3339, or Unix seconds.
Score the output with NAB's rule, e.g. ../shared/tools/nabscore.py OUT --windows ... .

With --cv, the parameters are chosen from a small declared grid (eval.NABGrid) by
leave-one-category-out cross-validation (a category is a directory): for each category
held out, the candidate scoring best (NAB standard profile, thresholds optimised there)
on the others scores it at those thresholds. Prints the in-sample scores (chosen on all
files) and the left-out ones, on all files and per category, for every NAB profile; with
--out, writes the left-out scores.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" || (*out == "" && !*cv) || fs.NArg() > 0 {
		return usageError{errors.New("cannot run eval nab: want --data DIR and --out DIR (or --cv) and no other arguments")}
	}
	if *cv {
		if *windows == "" {
			*windows = filepath.Join(*data, "..", "labels", "combined_windows.json")
		}
		if *profiles == "" {
			*profiles = filepath.Join(*data, "..", "config", "profiles.json")
		}
		res, err := eval.NABCV(ctx, *data, *windows, *profiles, *out, eval.NABGrid())
		if err != nil {
			return err
		}
		res.Print(stdout)
		return nil
	}
	sum, err := eval.NAB(ctx, *data, *out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "scored %d files, %d rows, from %s into %s\n", len(sum.Files), sum.Rows, *data, *out)
	if sum.Backsteps > 0 {
		fmt.Fprintf(stdout, "%d rows were stamped before the previous row: scored at the previous row's time, written with their own\n", sum.Backsteps)
	}
	return nil
}

// evalSequences learns command sequences from a training file through the
// command detector's own model and scores a test file (eval.RunSequences).
func evalSequences(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval sequences", flag.ContinueOnError)
	fs.SetOutput(stdout)
	train := fs.String("train", "", "training sessions (label<TAB>tokens per line)")
	test := fs.String("test", "", "test sessions (label<TAB>tokens per line)")
	unsup := fs.Bool("unsupervised", false, "learn from every training session, ignoring the labels (default: only the Normal ones)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	end := fs.String("end", eval.DefaultEndToken, "token appended to every training and test session as its last command (a disconnect); empty for none")
	alert := decide.DefaultConfig().AlertThreshold
	threshold := fs.Float64("threshold", alert, "flag a session whose top finding scores at least this (default: decide's alert threshold)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval sequences --train FILE --test FILE [--unsupervised] [--end TOKEN] [--json]

Reads two files of sessions, one per line: a label (Normal or Anomaly), a tab, and the
session's tokens separated by spaces, in order. Each session is a device of one class and
each token a command it issues (1 s apart; sessions start 1 min apart, training
first, or further apart so that the training sessions span a day: the command
detector trusts a class's vocabulary in full once it has seen a day of it), observed by the command detector exactly as
the pipeline's worker does: the class model (commands and transitions, counted by
distinct devices) learns from the training sessions, the Normal ones only unless
--unsupervised. Every session ends with the --end token, read as the device's
disconnect, so that the model knows which commands end a session. Test sessions are then scored without teaching the class model. A session
scores its top finding; it is flagged when that reaches --threshold (decide's alert
threshold by default, chosen without the test labels). The last line is
"precision=P recall=R f1=F" (with --json, one JSON object).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *train == "" || *test == "" || fs.NArg() > 0 {
		return usageError{errors.New("cannot run eval sequences: want --train FILE --test FILE and no other arguments")}
	}
	if !(*threshold > 0 && *threshold <= 1) {
		return usageError{fmt.Errorf("cannot use --threshold %v: want a value in (0,1]", *threshold)}
	}
	trainSet, err := eval.ReadSessions(*train)
	if err != nil {
		return err
	}
	testSet, err := eval.ReadSessions(*test)
	if err != nil {
		return err
	}
	res, err := eval.RunSequences(ctx, trainSet, testSet, !*unsup, *threshold, *end)
	if err != nil {
		return err
	}
	if *threshold == alert {
		res.ThresholdFrom = "decide's alert threshold"
	} else {
		res.ThresholdFrom = "--threshold"
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(res)
	}
	res.Print(stdout)
	return nil
}
