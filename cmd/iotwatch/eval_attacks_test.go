package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline/decide"
)

// evalJSON is the documented --json object, decoded strictly.
type evalJSON struct {
	Model       string  `json:"model"`
	Devices     int     `json:"devices"`
	Hours       float64 `json:"hours"`
	Seed        int64   `json:"seed"`
	Attacks     bool    `json:"attacks"`
	Entities    bool    `json:"entities"`
	Events      int     `json:"events"`
	Undecodable int     `json:"undecodable"`
	DeviceHours float64 `json:"device_hours"`
	Types       []struct {
		Type        string         `json:"type"`
		Injected    int            `json:"injected"`
		Detected    int            `json:"detected"`
		Recall      *float64       `json:"recall"`
		TTDMedianS  *float64       `json:"ttd_median_s"`
		TTDMaxS     *float64       `json:"ttd_max_s"`
		Reasons     map[string]int `json:"reasons"`
		OneIncident int            `json:"one_incident"`
		Alerts      int            `json:"alerts"`
		Incidents   int            `json:"incidents"`
	} `json:"attack_types"`
	Incidents            int            `json:"incidents"`
	FalseIncidents       int            `json:"false_incidents"`
	Alerts               int            `json:"alerts"`
	TrueAlerts           int            `json:"true_alerts"`
	FalseAlerts          int            `json:"false_alerts"`
	Precision            *float64       `json:"precision"`
	FalsePer1000DevHours float64        `json:"false_alerts_per_1000_device_hours"`
	FalseByReason        map[string]int `json:"false_alerts_by_reason"`
	FalseList            []struct {
		Time     time.Time `json:"time"`
		Device   string    `json:"device"`
		Score    float64   `json:"score"`
		Reasons  string    `json:"reasons"`
		NearMiss string    `json:"near_miss"`
		Class    string    `json:"class"`
		// Explanations: why it fired (observed against expected).
		Explanations []struct {
			Detector      string  `json:"detector"`
			Reason        string  `json:"reason"`
			Score         float64 `json:"score"`
			Observed      float64 `json:"observed"`
			Expected      float64 `json:"expected"`
			ObservedLabel string  `json:"observed_label"`
			ExpectedLabel string  `json:"expected_label"`
		} `json:"explanations"`
	} `json:"false_alert_list"`
	NearMisses []struct {
		Kind        string `json:"kind"`
		Injected    int    `json:"injected"`
		Alerted     int    `json:"alerted"`
		FalseAlerts int    `json:"false_alerts"`
	} `json:"near_misses"`
	FalseUnexplained int `json:"false_alerts_unexplained"`
	Decisions        int `json:"decisions"`
	TrueDecisions    int `json:"true_decisions"`
	FalseDecisions   int `json:"false_decisions"`
	Floods           []struct {
		ID       string  `json:"id"`
		Type     string  `json:"type"`
		IPs      int     `json:"ips"`
		Seen     int     `json:"ips_seen"`
		Blocked  int     `json:"ips_blocked"`
		InTime   int     `json:"ips_blocked_within_30s"`
		Fraction float64 `json:"fraction_blocked_within_30s"`
	} `json:"floods"`
	BenignIPBlocks       int      `json:"benign_ip_blocks"`
	BenignCIDRBlocks     int      `json:"benign_cidr_blocks"`
	BenignInBlockedCIDRs int      `json:"benign_ips_in_blocked_cidrs"`
	Matching             string   `json:"matching"`
	Plots                []string `json:"plots"`
}

func runEvalAttacksJSON(t *testing.T, args ...string) evalJSON {
	t.Helper()
	var out bytes.Buffer
	if err := evalCmd(context.Background(), append([]string{"attacks", "--json"}, args...), &out); err != nil {
		t.Fatalf("eval attacks %v: %v", args, err)
	}
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	var res evalJSON
	if err := dec.Decode(&res); err != nil {
		t.Fatalf("eval attacks --json is not the documented object: %v", err)
	}
	if dec.More() {
		t.Fatalf("eval attacks --json printed more than one object")
	}
	return res
}

// checkFalseList checks that the false alert list has every false alert, in
// time order, each with a device, a score at the lowest that may alert or above,
// reasons counted in false_alerts_by_reason, its class and its explanations.
func checkFalseList(t *testing.T, res evalJSON) {
	t.Helper()
	if len(res.FalseList) != res.FalseAlerts {
		t.Errorf("false_alert_list has %d alerts, false_alerts %d", len(res.FalseList), res.FalseAlerts)
	}
	byReason := map[string]int{}
	for i, a := range res.FalseList {
		if a.Device == "" || a.Score < decide.DefaultMinAlertScore || a.Score > 1 || a.Time.IsZero() || (i > 0 && a.Time.Before(res.FalseList[i-1].Time)) {
			t.Errorf("false alert %d: %+v", i, a)
		}
		byReason[a.Reasons]++
		// The explanations are the alert's reasons, in order.
		var keys []string
		for _, e := range a.Explanations {
			keys = append(keys, e.Detector+"/"+e.Reason)
		}
		if strings.Join(keys, "+") != a.Reasons || a.Class == "" {
			t.Errorf("false alert %d: reasons %q, class %q, explanations %+v", i, a.Reasons, a.Class, a.Explanations)
		}
	}
	if !maps.Equal(byReason, res.FalseByReason) {
		t.Errorf("false alerts by reason %v, from the list %v", res.FalseByReason, byReason)
	}
}

func TestEvalAttacksSmallFleet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "plots")
	res := runEvalAttacksJSON(t, "--devices", "200", "--hours", "2", "--seed", "3", "--plot", dir)

	// The labels the same simulation injects.
	fl, err := sim.New(sim.Config{Seed: 3, Devices: 200, Duration: 2 * time.Hour, Attacks: true})
	if err != nil {
		t.Fatal(err)
	}
	injected := map[string]int{}
	for _, l := range fl.Labels() {
		injected[l.Type]++
	}
	if res.Devices != 200 || res.Hours != 2 || res.DeviceHours != 400 || !res.Attacks || res.Events == 0 || res.Undecodable != 0 {
		t.Errorf("run: %+v", res)
	}
	detectedTypes := 0
	for i, r := range res.Types {
		if r.Type != sim.AttackTypes[i] || r.Injected != injected[r.Type] || r.Injected == 0 {
			t.Errorf("row %d: type %q injected %d; want %q injected %d", i, r.Type, r.Injected, sim.AttackTypes[i], injected[sim.AttackTypes[i]])
			continue
		}
		if r.Recall == nil || *r.Recall != float64(r.Detected)/float64(r.Injected) {
			t.Errorf("%s: recall %v, detected %d of %d", r.Type, r.Recall, r.Detected, r.Injected)
		}
		if (r.Detected > 0) != (len(r.Reasons) > 0) {
			t.Errorf("%s: %d detected, reasons %v", r.Type, r.Detected, r.Reasons)
		}
		if r.Detected > 0 {
			detectedTypes++
			if *r.Recall <= 0 || r.TTDMedianS == nil || r.TTDMaxS == nil || *r.TTDMedianS < 0 || *r.TTDMaxS < *r.TTDMedianS {
				t.Errorf("%s detected: recall %v, TTD median %v max %v", r.Type, *r.Recall, r.TTDMedianS, r.TTDMaxS)
			}
		} else if r.TTDMedianS != nil {
			t.Errorf("%s not detected but has a time to detect", r.Type)
		}
	}
	if detectedTypes == 0 {
		t.Errorf("no attack type detected: %+v", res.Types)
	}
	if res.TrueAlerts == 0 || res.TrueAlerts+res.FalseAlerts != res.Alerts || res.TrueDecisions+res.FalseDecisions != res.Decisions {
		t.Errorf("alerts %d = %d true + %d false; decisions %d = %d true + %d false",
			res.Alerts, res.TrueAlerts, res.FalseAlerts, res.Decisions, res.TrueDecisions, res.FalseDecisions)
	}
	checkFalseList(t, res)
	if res.Precision == nil || math.Abs(*res.Precision-float64(res.TrueAlerts)/float64(res.Alerts)) > 1e-12 {
		t.Errorf("precision %v, want %d/%d", res.Precision, res.TrueAlerts, res.Alerts)
	}
	if want := float64(res.FalseAlerts) / res.DeviceHours * 1000; math.Abs(res.FalsePer1000DevHours-want) > 1e-9 {
		t.Errorf("false alerts per 1,000 device-hours %v, want %v", res.FalsePer1000DevHours, want)
	}
	if !strings.Contains(res.Matching, "API key") {
		t.Errorf("matching rule not stated: %q", res.Matching)
	}

	// One volume plot per attack type, one normal device, the score histogram.
	if len(res.Plots) != len(sim.AttackTypes)+2 {
		t.Errorf("plots %v: want %d", res.Plots, len(sim.AttackTypes)+2)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	if len(files) != len(res.Plots) {
		t.Errorf("%d PNG files in %s, %d reported", len(files), dir, len(res.Plots))
	}
	for _, p := range res.Plots {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("%s is not a PNG: %v", p, err)
			continue
		}
		if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Errorf("%s is %v", p, b)
		}
	}
	for _, name := range []string{"scores.png", "volume-normal-"} {
		if !slices.ContainsFunc(res.Plots, func(p string) bool { return strings.HasPrefix(filepath.Base(p), name) }) {
			t.Errorf("no plot %s* in %v", name, res.Plots)
		}
	}
}

func TestEvalAttacksWithoutAttacks(t *testing.T) {
	res := runEvalAttacksJSON(t, "--devices", "200", "--hours", "2", "--attacks=false")
	for _, r := range res.Types {
		if r.Injected != 0 || r.Detected != 0 || r.Recall != nil || r.TTDMedianS != nil {
			t.Errorf("%s without attacks: %+v", r.Type, r)
		}
	}
	checkFalseList(t, res)
	if res.TrueAlerts != 0 || res.FalseAlerts != res.Alerts || res.TrueDecisions != 0 {
		t.Errorf("without attacks: %d true alerts, %d false of %d, %d true decisions", res.TrueAlerts, res.FalseAlerts, res.Alerts, res.TrueDecisions)
	}
	switch {
	case res.Alerts == 0 && res.Precision != nil:
		t.Errorf("no alerts, but precision %v (want null)", *res.Precision)
	case res.Alerts > 0 && (res.Precision == nil || *res.Precision != 0):
		t.Errorf("%d alerts, all false, but precision %v (want 0)", res.Alerts, res.Precision)
	}

	var out bytes.Buffer
	if err := evalCmd(context.Background(), []string{"attacks", "--devices", "200", "--hours", "2", "--attacks=false"}, &out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^flood\s+0\s+0\s+n/a\s`).MatchString(out.String()) {
		t.Errorf("recall of an attack type never injected is not n/a:\n%s", out.String())
	}
}

func TestEvalAttacksBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--hours", "0"},
		{"--hours", "0.1"}, // attacks need a longer attack period
		{"--devices", "5"},
		{"--alert-threshold", "2"},
		{"--model", "harsh"},
		{"--model", "field", "--devices", "50"}, // the field model's attacks need more devices
		{"extra"},
	} {
		var out bytes.Buffer
		err := evalCmd(context.Background(), append([]string{"attacks"}, args...), &out)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("eval attacks %v: %v, want a usage error", args, err)
		}
	}
}

// TestEvalAttacksFieldModel runs the second traffic model through eval attacks:
// one row per field attack type, each injected; every false alert attributed
// to one near-miss kind or counted as unexplained.
func TestEvalAttacksFieldModel(t *testing.T) {
	res := runEvalAttacksJSON(t, "--model", "field", "--devices", "150", "--hours", "4", "--seed", "2")
	if res.Model != sim.ModelField {
		t.Errorf("model %q, want %q", res.Model, sim.ModelField)
	}
	var types []string
	for _, r := range res.Types {
		types = append(types, r.Type)
		if r.Injected != 1 {
			t.Errorf("%s: injected %d, want 1", r.Type, r.Injected)
		}
	}
	if !slices.Equal(types, sim.FieldAttackTypes) {
		t.Errorf("rows %v, want %v", types, sim.FieldAttackTypes)
	}
	checkFalseList(t, res)
	var kinds []string
	sum, injected := res.FalseUnexplained, 0
	byKind := map[string]int{}
	for _, a := range res.FalseList {
		byKind[a.NearMiss]++
	}
	for _, n := range res.NearMisses {
		kinds = append(kinds, n.Kind)
		sum += n.FalseAlerts
		injected += n.Injected
		if n.FalseAlerts != byKind[n.Kind] || n.Alerted > n.Injected || (n.Alerted == 0) != (n.FalseAlerts == 0) {
			t.Errorf("near miss %+v; the false alert list has %d on it", n, byKind[n.Kind])
		}
	}
	if !slices.Equal(kinds, sim.NearMissKinds) || sum != res.FalseAlerts || byKind[""] != res.FalseUnexplained || injected == 0 {
		t.Errorf("near misses %v: %d false alerts attributed + unexplained, of %d; %d injected", kinds, sum, res.FalseAlerts, injected)
	}
	var out bytes.Buffer
	if err := evalCmd(context.Background(), []string{"attacks", "--model", "field", "--devices", "150", "--hours", "4", "--seed", "2"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Fleet: model field,", "NEAR MISS", "backend_incident", "stolen_key_no_geo"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestEvalAttacksEntities: --entities adds the three attacks spread over
// devices and addresses to the table (one of each on a small fleet), every
// alert joins an incident, and a detected attack is in one incident at most
// as often as it is detected. The distributed flood (1,000+ new addresses)
// has >= 90% of its addresses blocked within 30 s of their first request,
// and no benign address or network is blocked (issue 14's done-when).
func TestEvalAttacksEntities(t *testing.T) {
	res := runEvalAttacksJSON(t, "--devices", "300", "--hours", "2", "--seed", "3", "--entities")
	if !res.Entities {
		t.Errorf("entities: false, want true")
	}
	got := map[string]int{}
	for _, ty := range res.Types {
		got[ty.Type] = ty.Injected
		if ty.OneIncident > ty.Detected || ty.Incidents > ty.Alerts || (ty.Detected > 0) != (ty.Alerts > 0) || ty.Incidents < ty.OneIncident {
			t.Errorf("%s: %d detected, %d alerts in %d incidents, %d attacks in one incident", ty.Type, ty.Detected, ty.Alerts, ty.Incidents, ty.OneIncident)
		}
	}
	for _, ty := range sim.EntityAttackTypes {
		if got[ty] != 1 {
			t.Errorf("%s: %d injected, want 1 (types %v)", ty, got[ty], got)
		}
	}
	if res.Alerts > 0 && (res.Incidents == 0 || res.Incidents > res.Alerts || res.FalseIncidents > res.Incidents) {
		t.Errorf("%d alerts made %d incidents (%d false)", res.Alerts, res.Incidents, res.FalseIncidents)
	}
	if len(res.Floods) != 1 {
		t.Fatalf("%d floods reported, want 1: %+v", len(res.Floods), res.Floods)
	}
	if f := res.Floods[0]; f.IPs < 1000 || f.Seen != f.IPs || f.Fraction < 0.9 || f.Fraction != float64(f.InTime)/float64(f.IPs) {
		t.Errorf("flood %s: %d of %d addresses (%d seen) blocked within 30s (%.3f), want >= 90%%", f.ID, f.InTime, f.IPs, f.Seen, f.Fraction)
	}
	if res.BenignIPBlocks != 0 || res.BenignCIDRBlocks != 0 {
		t.Errorf("benign blocks: %d addresses, %d networks, want none", res.BenignIPBlocks, res.BenignCIDRBlocks)
	}
}

// TestEvalAttacksThinFlood: --thin-flood adds a distributed flood spread
// thin (1,000+ new addresses in a few /24s and /48s, 1-3 requests each: no
// address bursts) to --entities; >= 90% of its addresses are covered by a
// block (its networks', scope cidr) within 30 s of their first request, and
// no benign address or network is blocked, nor is any benign address seen
// in the run inside a blocked network.
func TestEvalAttacksThinFlood(t *testing.T) {
	res := runEvalAttacksJSON(t, "--devices", "300", "--hours", "2", "--seed", "3", "--entities", "--thin-flood")
	var thin int
	for _, f := range res.Floods {
		if f.Type != sim.AttackThinFlood {
			continue
		}
		thin++
		if f.IPs < 1000 || f.Seen != f.IPs || f.Fraction < 0.9 {
			t.Errorf("thin flood %s: %d of %d addresses (%d seen) blocked within 30s (%.3f), want >= 90%%", f.ID, f.InTime, f.IPs, f.Seen, f.Fraction)
		}
	}
	if thin != 1 {
		t.Fatalf("%d thin floods reported, want 1: %+v", thin, res.Floods)
	}
	if res.BenignIPBlocks != 0 || res.BenignCIDRBlocks != 0 || res.BenignInBlockedCIDRs != 0 {
		t.Errorf("benign blocks: %d addresses, %d networks, %d benign addresses in blocked networks, want none",
			res.BenignIPBlocks, res.BenignCIDRBlocks, res.BenignInBlockedCIDRs)
	}
}

// TestEvalAttacksBasicAtDefaultBudget: under the default --alert-budget, every
// attack of the basic traffic model is still caught. 1,000 devices over 8
// hours: the calibration is warm (decide.CalibrationWarmup and the budget's
// 4,000 complete device-hours) from a little after 4 h, and the attacks start
// after 4.8 h, so they are judged by the budget's threshold.
func TestEvalAttacksBasicAtDefaultBudget(t *testing.T) {
	res := runEvalAttacksJSON(t, "--model", "basic", "--devices", "1000", "--hours", "8", "--seed", "1")
	if res.DeviceHours < 2*4000 {
		t.Fatalf("%v device-hours: the calibration would not be warm before the attacks", res.DeviceHours)
	}
	for _, r := range res.Types {
		if r.Injected == 0 || r.Detected != r.Injected {
			t.Errorf("%s: %d of %d detected at the default budget", r.Type, r.Detected, r.Injected)
		}
	}
	checkFalseList(t, res)
}
