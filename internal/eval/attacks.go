// Package eval measures how the detectors do on labelled data: the simulated
// fleet's attacks run through the offline scoring stack (RunAttacks, and the
// demo's report read back from ClickHouse: QueryResults, Evaluate), time
// series in the layout of the Numenta Anomaly Benchmark (NAB), and command
// sequences (RunSequences). 'iotwatch eval' is its command line; plotting
// lives in package eval/plot, which only a binary that plots links.
package eval

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/schemas"
)

// Defaults of `eval attacks`: 5000 devices (five attacks of each type) over 12
// hours, as long as the demo's run, so that slow devices (a meter: one request
// per 5 min) have a baseline before the attacks start (after 60% of the run).
// About 3.6 million events: 10-25 s on 2 cores.
const (
	DefaultAttackDevices = 5000
	DefaultAttackHours   = 12.0
)

// AttackMatchRule states how Evaluate (report.go) matches an alert to an
// attack; printed with the results so that the numbers can be read.
var AttackMatchRule = fmt.Sprintf("an alert is on an attack when its device, API key or client IP is the label's "+
	"(for an attack spread over devices and addresses: one of its devices or addresses; for an entity alert: "+
	"its entity is the attacking address, a network holding one, or the key; for a tenant alert: the tenant of an attack spread thin over it; for a class alert: the class (tenant/class) of one of the devices of an attack spread over many) "+
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
	// OneIncident counts the detected attacks whose alerts all joined one
	// incident: what an analyst sees as one case. Alerts and Incidents sum,
	// over the type's attacks, their matching alerts and the distinct
	// incidents those joined.
	OneIncident int `json:"one_incident"`
	Alerts      int `json:"alerts"`
	Incidents   int `json:"incidents"`
}

// falseAlert is an alert that matches no label.
type falseAlert struct {
	Time    time.Time `json:"time"`
	Device  string    `json:"device"`
	Score   float64   `json:"score"`
	Reasons string    `json:"reasons"`
	// NearMiss is the kind of the labelled near miss the alert fell on ("" for
	// none).
	NearMiss string `json:"near_miss,omitempty"`
	// Class is the device's class and Explanations the alert's findings,
	// observed against expected: why it fired.
	Class        string                `json:"class,omitempty"`
	Explanations []schemas.Explanation `json:"explanations,omitempty"`

	alert StoredAlert
}

// nearMissRow is one near-miss kind's row: how many the model injected, how
// many drew at least one false alert, and the false alerts on them.
type nearMissRow struct {
	Kind        string `json:"kind"`
	Injected    int    `json:"injected"`
	Alerted     int    `json:"alerted"`
	FalseAlerts int    `json:"false_alerts"`
}

// matchesNear reports whether a false alert falls on a near miss: like matches,
// but a label with no device, key or IP (a fleet-wide incident) covers every
// alert in its window.
func matchesNear(l sim.Label, a StoredAlert) bool {
	if l.Device == "" && l.APIKey == "" && l.IP == "" {
		return !a.Time.Before(l.Start) && !a.Time.After(l.End.Add(alertGrace))
	}
	return matches(l, a)
}

// nearMissOf returns the kind of the first near miss (in sim.NearMissKinds
// order) that a false alert falls on, "" for none.
func nearMissOf(near []sim.Label, a StoredAlert) string {
	for _, k := range sim.NearMissKinds {
		for _, l := range near {
			if l.Type == k && matchesNear(l, a) {
				return k
			}
		}
	}
	return ""
}

// nearMissRows counts, per near-miss kind, the near misses injected, those
// with at least one false alert, and the false alerts attributed to the kind
// (each false alert to one kind: nearMissOf); unexplained counts the false
// alerts on no near miss.
func nearMissRows(near []sim.Label, falses []StoredAlert) (rows []nearMissRow, unexplained int) {
	if len(near) == 0 {
		return nil, len(falses)
	}
	idx := map[string]int{}
	for _, k := range sim.NearMissKinds {
		idx[k] = len(rows)
		rows = append(rows, nearMissRow{Kind: k})
	}
	for _, l := range near {
		rows[idx[l.Type]].Injected++
		for _, a := range falses {
			if matchesNear(l, a) {
				rows[idx[l.Type]].Alerted++
				break
			}
		}
	}
	for _, a := range falses {
		if k := nearMissOf(near, a); k != "" {
			rows[idx[k]].FalseAlerts++
		} else {
			unexplained++
		}
	}
	return rows, unexplained
}

// AttacksResult is what `eval attacks` reports (the --json object).
type AttacksResult struct {
	// Model is the simulator's traffic model (sim.Models).
	Model   string  `json:"model"`
	Devices int     `json:"devices"`
	Hours   float64 `json:"hours"`
	Seed    int64   `json:"seed"`
	Attacks bool    `json:"attacks"`
	// Entities: the fleet also carried the attacks spread over devices and
	// addresses (sim.EntityAttackTypes).
	Entities    bool               `json:"entities"`
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
	// Incidents counts the incidents the alerts were grouped into
	// (pipeline/incident, as the live pipeline groups them), FalseIncidents
	// those made of false alerts only.
	Incidents      int `json:"incidents"`
	FalseIncidents int `json:"false_incidents"`
	Decisions      int `json:"decisions"`
	TrueDecisions  int `json:"true_decisions"`
	FalseDecisions int `json:"false_decisions"`
	// FalseByReason counts false alerts by their reasons (detector/reason,
	// joined by "+").
	FalseByReason map[string]int `json:"false_alerts_by_reason"`
	// FalseList is every false alert, in event-time order, for reading
	// what the detectors got wrong.
	FalseList []falseAlert `json:"false_alert_list"`
	// NearMisses counts the false alerts on the model's labelled near misses
	// (benign events that look like attacks), per kind; absent when the model
	// labels none. FalseUnexplained counts the false alerts on no near miss.
	NearMisses       []nearMissRow `json:"near_misses,omitempty"`
	FalseUnexplained int           `json:"false_alerts_unexplained"`
	// Floods is, per distributed flood (sim.AttackDistributedFlood,
	// sim.AttackThinFlood), how many
	// of its addresses were blocked, and within IPBlockWithin of their
	// first request. BenignIPBlocks counts the distinct addresses of no
	// attack blocked (scope ip), BenignCIDRBlocks the networks holding no
	// attack's address (scope cidr).
	Floods           []ipAttackResult `json:"floods,omitempty"`
	BenignIPBlocks   int              `json:"benign_ip_blocks"`
	BenignCIDRBlocks int              `json:"benign_cidr_blocks"`
	// BenignInBlockedCIDRs counts the addresses of no attack seen in the run
	// inside a blocked network (scope cidr): what a network's block covers
	// beyond the attack's own addresses.
	BenignInBlockedCIDRs int      `json:"benign_ips_in_blocked_cidrs"`
	Matching             string   `json:"matching"`
	Plots                []string `json:"plots,omitempty"`
}

// Plotter draws what RunAttacks saw. It is shown every event before the
// worker scores it (with the fleet view the worker's detectors see), then the
// event's combined score, and every alert; at the end, it writes its plots to
// a directory and returns their paths. It must not retain the event or the
// alert.
type Plotter interface {
	Observe(ev *schemas.Event)
	Score(score float32)
	Alert(a *schemas.Alert)
	Write(dir string) ([]string, error)
}

// NewPlotter returns a Plotter for the fleet fc with its labels; model is the
// worker's class model (class table and detectors' class statistics), read-only.
type NewPlotter func(fc sim.Config, labels []sim.Label, model *detectors.ClassModel) (Plotter, error)

// newPlotter is the registered NewPlotter; nil when the binary does not plot.
var newPlotter NewPlotter

// errNoPlotter is RunAttacks's error when asked for plots without a plotter.
var errNoPlotter = errors.New("cannot plot: no plotter is linked into this binary (package internal/eval/plot)")

// RegisterPlotter makes RunAttacks plot with f. Package internal/eval/plot
// registers itself in init, so that only a binary that imports it links the
// plotting stack (gonum.org/v1/plot, fonts, PDF and SVG writers).
func RegisterPlotter(f NewPlotter) { newPlotter = f }

// CanPlot reports whether a plotter is registered.
func CanPlot() bool { return newPlotter != nil }

// progressEvery is how many events pass between two looks at the wall clock
// (for progress and cancellation).
const progressEvery = 1 << 16

// RunAttacks runs fc's fleet through the scoring stack of cfg and evaluates
// the alerts and decisions against the labels. With plotDir, it also writes
// the plots there (only with a registered plotter: RegisterPlotter). Progress
// lines go to progress about every 5 seconds.
func RunAttacks(ctx context.Context, cfg pipeline.Config, fc sim.Config, plotDir string, progress io.Writer) (*AttacksResult, error) {
	fl, err := sim.Open(fc)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	fc = fl.Config()
	labels := fl.Labels()
	near := fl.NearMisses()
	fo := cfg.Formats
	fo.Source = "eval"
	dec, err := formats.New(schemas.FormatJSON, fo)
	if err != nil {
		return nil, fmt.Errorf("cannot build the decoder: %w", err)
	}
	st, err := NewReplayStack(cfg)
	if err != nil {
		return nil, err
	}
	grouper := incident.New(cfg.Incidents)
	seen := newFirstSeen(labels)
	merged := map[string]string{} // retired incident id -> the id that took its alerts
	grouper.OnRetire(func(inc *schemas.Incident) { merged[inc.ID] = inc.MergedInto })
	var rec Plotter
	if plotDir != "" {
		if newPlotter == nil {
			return nil, errNoPlotter
		}
		if rec, err = newPlotter(fc, labels, st.Model()); err != nil {
			return nil, err
		}
	}

	var (
		alerts     []StoredAlert
		decisions  []StoredDecision
		ev         schemas.Event
		sc         schemas.Scored
		buf        []byte
		events     int
		bad        int
		seq        uint64
		start      = time.Now()
		lastReport = start
	)
	addAlert := func(a *schemas.Alert, d *schemas.Decision) {
		s := storedFromAlert(a)
		decID := ""
		if d != nil && d.AlertID == a.ID {
			decID = d.ID
		}
		if inc := grouper.Add(a, decID); inc != nil {
			s.Incident = inc.ID
		}
		alerts = append(alerts, s)
		if rec != nil {
			rec.Alert(a)
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
		seen.observe(&ev)
		if rec != nil {
			rec.Observe(&ev) // before Process: the fleet view as the worker's detectors see it
		}
		st.Score(&ev, &sc, func(a *schemas.Alert, d *schemas.Decision) {
			if a != nil {
				addAlert(a, d)
			}
			if d != nil {
				decisions = append(decisions, storedFromDecision(d))
			}
		})
		if rec != nil {
			rec.Score(sc.Score)
		}
	}
	fmt.Fprintf(progress, "eval attacks: scored %d events (%d undecodable) in %.1fs: %d alerts, %d decisions\n",
		events, bad, time.Since(start).Seconds(), len(alerts), len(decisions))

	for i := range alerts { // each alert's incident as it ended: after the merges and renames since it joined
		for id, ok := merged[alerts[i].Incident]; ok; id, ok = merged[id] {
			alerts[i].Incident = id
		}
	}
	rep := Evaluate(labels, alerts, decisions, fc.Devices, fc.Duration)
	res := summarize(rep, sim.AttackTypesFor(fc))
	res.Model, res.Seed, res.Attacks, res.Entities, res.Events, res.Undecodable = fc.Model, fc.Seed, fc.Attacks, fc.Entities, events, bad
	res.NearMisses, res.FalseUnexplained = nearMissRows(near, rep.FalseAlerts)
	res.Floods, res.BenignIPBlocks, res.BenignCIDRBlocks, res.BenignInBlockedCIDRs = ipBlocks(labels, seen, decisions, map[string]bool{sim.AttackDistributedFlood: true, sim.AttackThinFlood: true})
	for i := range res.FalseList {
		res.FalseList[i].NearMiss = nearMissOf(near, res.FalseList[i].alert)
	}
	if rec != nil {
		if res.Plots, err = rec.Write(plotDir); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// storedFromAlert and storedFromDecision give replayed results the shape the
// demo's report reads back from ClickHouse, so both are judged by evaluate.
func storedFromAlert(a *schemas.Alert) StoredAlert {
	s := StoredAlert{ID: a.ID, Group: a.Group, Device: a.Device, APIKey: a.APIKey, ClientIP: a.ClientIP, Severity: a.Severity,
		Time: a.Time, Score: a.Score, Class: a.Class, Explanations: a.Reasons}
	s.EntityKind, s.Entity = incident.EntityOf(a)
	for _, r := range a.Reasons {
		s.Reasons = append(s.Reasons, r.Reason)
		s.Detectors = append(s.Detectors, r.Detector)
	}
	return s
}

func storedFromDecision(d *schemas.Decision) StoredDecision {
	return StoredDecision{ID: d.ID, AlertID: d.AlertID, Action: d.Action, Scope: d.Scope, Value: d.Value,
		Device: d.Device, Time: d.CreatedAt}
}

// summarize aggregates a report per attack type (in the order of types: the
// model's attack types).
func summarize(r Report, types []string) *AttacksResult {
	res := &AttacksResult{Devices: r.Devices, Hours: r.Duration.Hours(), Matching: AttackMatchRule,
		Alerts: r.Alerts, FalseAlerts: len(r.FalseAlerts), Decisions: r.Decisions, FalseDecisions: r.FalseBlocks,
		Incidents: r.Incidents, FalseIncidents: r.FalseIncidents}
	res.DeviceHours = float64(r.Devices) * r.Duration.Hours()
	res.TrueAlerts = res.Alerts - res.FalseAlerts
	res.FalseByReason = map[string]int{}
	res.FalseList = []falseAlert{}
	for _, a := range r.FalseAlerts {
		res.FalseByReason[reasonKey(a)]++
		res.FalseList = append(res.FalseList, falseAlert{Time: a.Time, Device: a.Device, Score: a.Score, Reasons: reasonKey(a),
			Class: a.Class, Explanations: a.Explanations, alert: a})
	}
	slices.SortStableFunc(res.FalseList, func(a, b falseAlert) int { return a.Time.Compare(b.Time) })
	res.TrueDecisions = res.Decisions - res.FalseDecisions
	if res.Alerts > 0 {
		res.Precision = ptr(float64(res.TrueAlerts) / float64(res.Alerts))
	}
	if res.DeviceHours > 0 {
		res.FalsePer1000DevHours = float64(res.FalseAlerts) / res.DeviceHours * 1000
	}
	for _, typ := range types {
		t := attackTypeResult{Type: typ, Reasons: map[string]int{}}
		var ttds []float64
		for _, a := range r.Attacks {
			if a.Label.Type != typ {
				continue
			}
			t.Injected++
			t.Alerts += a.Alerts
			t.Incidents += a.Incidents
			for _, k := range a.Reasons {
				t.Reasons[k]++
			}
			if a.Detected {
				t.Detected++
				ttds = append(ttds, a.TTD.Seconds())
				if a.Incidents == 1 {
					t.OneIncident++
				}
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
func reasonKey(a StoredAlert) string {
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

// Print writes the result as a table per attack type, then the alerts and
// decisions on true and false alerts, the matching rule and the plots written.
func (r *AttacksResult) Print(w io.Writer) {
	fmt.Fprintf(w, "Fleet: model %s, %d devices, %g h (%.0f device-hours), seed %d, attacks %v, entity attacks %v; %d events scored.\n\n",
		r.Model, r.Devices, r.Hours, r.DeviceHours, r.Seed, r.Attacks, r.Entities, r.Events)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK TYPE\tINJECTED\tDETECTED\tRECALL\tTTD MEDIAN\tTTD MAX\tALERTS\tINCIDENTS\tONE INCIDENT\tREASONS (ATTACKS)")
	for _, t := range r.Types {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", t.Type, t.Injected, t.Detected, fmtRatio(t.Recall),
			fmtSeconds(t.TTDMedianS), fmtSeconds(t.TTDMaxS), t.Alerts, t.Incidents, t.OneIncident, fmtCounts(t.Reasons, " "))
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
	if len(r.NearMisses) > 0 {
		fmt.Fprintf(w, "\nFalse alerts on labelled near misses (benign look-alikes):\n\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NEAR MISS\tINJECTED\tALERTED\tFALSE ALERTS")
		for _, n := range r.NearMisses {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", n.Kind, n.Injected, n.Alerted, n.FalseAlerts)
		}
		fmt.Fprintf(tw, "(on no near miss)\t\t\t%d\n", r.FalseUnexplained)
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Incidents: %d, %d of them of false alerts only (per attack type: ALERTS on its attacks, the INCIDENTS they joined, "+
		"ONE INCIDENT the detected attacks whose alerts all joined one).\n",
		r.Incidents, r.FalseIncidents)
	fmt.Fprintf(w, "Decisions: %d, %d on true alerts, %d on false alerts.\n", r.Decisions, r.TrueDecisions, r.FalseDecisions)
	if len(r.Floods) > 0 {
		fmt.Fprintf(w, "\nDistributed floods: their addresses blocked (scope ip, or cidr holding them), and within %s of each address's first request:\n\n", IPBlockWithin)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "FLOOD\tIPS\tBLOCKED\tBLOCKED <=30S\tFRACTION <=30S")
		for _, f := range r.Floods {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.3f\n", f.ID, f.IPs, f.Blocked, f.InTime, f.Fraction)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Benign addresses blocked: %d (scope ip, on no attack's address), %d networks (scope cidr, holding no attack's address); %d addresses of no attack seen inside a blocked network.\n",
		r.BenignIPBlocks, r.BenignCIDRBlocks, r.BenignInBlockedCIDRs)
	fmt.Fprintf(w, "Matching: %s.\n", r.Matching)
	for _, p := range r.Plots {
		fmt.Fprintf(w, "wrote %s\n", p)
	}
}

// PrintFalse writes every false alert, in event-time order, one line each:
// its time, device, class, the labelled near miss it fell on ("-" for
// none), its combined score and each finding with its score and what was
// observed against what was expected. It is the analyst's reading of why
// benign traffic alerted (the same list as the JSON's false_alert_list).
func (r *AttacksResult) PrintFalse(w io.Writer) {
	fmt.Fprintf(w, "\nFalse alerts (%d), by event time:\n\n", len(r.FalseList))
	if len(r.FalseList) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tDEVICE\tCLASS\tNEAR MISS\tSCORE\tFINDINGS (OBSERVED / EXPECTED)")
	var b strings.Builder
	for _, a := range r.FalseList {
		b.Reset()
		for i, e := range a.Explanations {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "%s/%s %.2f (%s / %s)", e.Detector, e.Reason, e.Score,
				labelled(e.Observed, e.ObservedLabel), labelled(e.Expected, e.ExpectedLabel))
		}
		if len(a.Explanations) == 0 {
			b.WriteString(a.Reasons)
		}
		near := cmp.Or(a.NearMiss, "-")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\n", a.Time.UTC().Format(time.DateTime), a.Device, cmp.Or(a.Class, "-"),
			near, a.Score, b.String())
	}
	tw.Flush()
}

// labelled formats a finding's observed or expected value with its label.
func labelled(v float64, label string) string {
	s := strconv.FormatFloat(v, 'g', 4, 64)
	if label == "" {
		return s
	}
	return label + " " + s
}
