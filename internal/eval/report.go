package eval

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/iotwatch/iotwatch/internal/sim"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/schemas"
)

// StoredAlert and StoredDecision are the alerts and decisions that Evaluate
// judges: read back from ClickHouse (QueryResults) or replayed (RunAttacks).
type StoredAlert struct {
	ID, Device, APIKey, ClientIP, Severity string
	// Group is the alert's group (schemas.Alert.Group); empty in rows
	// written before groups existed (the alert is then a group of its own).
	Group              string
	Time               time.Time
	Score              float64
	Reasons, Detectors []string
	// Class and Explanations are the alert's device class and findings
	// (observed against expected), kept by replays only (eval attacks), for
	// reading false alerts.
	Class        string
	Explanations []schemas.Explanation
	// EntityKind and Entity are what an entity alert is about
	// (incident.EntityOf: "ip", "prefix", "api_key", ...); empty for a
	// device alert.
	EntityKind, Entity string
	// Incident is the id of the incident the alert joined (eval attacks).
	Incident string
}

// group is the alert's group, its ID when it has none.
func (a StoredAlert) group() string {
	if a.Group == "" {
		return a.ID
	}
	return a.Group
}

type StoredDecision struct {
	ID, AlertID, Action, Scope, Value, Device string
	Time                                      time.Time
}

// QueryResults reads every alert and decision back from ClickHouse (FINAL:
// collapsed by id, as an analyst should query them).
func QueryResults(ctx context.Context, dsn, db string) ([]StoredAlert, []StoredDecision, error) {
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot parse ClickHouse DSN: %w", err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot open ClickHouse: %w", err)
	}
	defer conn.Close()
	q := fmt.Sprintf("SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM %s.%s FINAL ORDER BY %s",
		schemas.ColID, schemas.ColGroup, schemas.ColDevice, schemas.ColAPIKey, schemas.ColClientIP, schemas.ColSeverity,
		schemas.ColTimeMs, schemas.ColScore, schemas.ColReasons, schemas.ColDetectors, db, schemas.TableAlerts, schemas.ColTimeMs)
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot query alerts: %w", err)
	}
	var alerts []StoredAlert
	for rows.Next() {
		var a StoredAlert
		var ms int64
		if err := rows.Scan(&a.ID, &a.Group, &a.Device, &a.APIKey, &a.ClientIP, &a.Severity, &ms, &a.Score, &a.Reasons, &a.Detectors); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("cannot read alerts: %w", err)
		}
		a.Time = time.UnixMilli(ms).UTC()
		alerts = append(alerts, a)
	}
	rows.Close()
	q = fmt.Sprintf("SELECT %s, %s, %s, %s, %s, %s, %s FROM %s.%s FINAL ORDER BY %s",
		schemas.ColID, schemas.ColAlertID, schemas.ColAction, schemas.ColScope, schemas.ColValue, schemas.ColDevice,
		schemas.ColCreatedMs, db, schemas.TableDecisions, schemas.ColCreatedMs)
	rows, err = conn.Query(ctx, q)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot query decisions: %w", err)
	}
	defer rows.Close()
	var ds []StoredDecision
	for rows.Next() {
		var d StoredDecision
		var ms int64
		if err := rows.Scan(&d.ID, &d.AlertID, &d.Action, &d.Scope, &d.Value, &d.Device, &ms); err != nil {
			return nil, nil, fmt.Errorf("cannot read decisions: %w", err)
		}
		d.Time = time.UnixMilli(ms).UTC()
		ds = append(ds, d)
	}
	return alerts, ds, rows.Err()
}

// attackResult is one labelled attack and what the pipeline made of it.
type attackResult struct {
	Label    sim.Label
	Detected bool
	// Alerts counts its matching alerts, Incidents the distinct incidents
	// they joined (StoredAlert.Incident; 0 when no alert carries one).
	Alerts, Incidents int
	TTD               time.Duration // first matching alert - attack start
	Reasons           []string      // detector/reason of matching alerts, distinct
	Blocked           string        // "scope=value" of the first matching block, if any
}

// Report is what Evaluate finds: every labelled attack and what the
// pipeline made of it, the false alerts and the decisions on them.
type Report struct {
	Attacks     []attackResult
	Alerts      int
	FalseAlerts []StoredAlert
	Decisions   int
	FalseBlocks int
	Devices     int
	Duration    time.Duration
	// Incidents counts the distinct incidents of the alerts
	// (StoredAlert.Incident), FalseIncidents those of false alerts only.
	Incidents, FalseIncidents int
}

// alertGrace is how long after an attack's end an alert still counts for it
// (alerts carry the time of the event that raised them; late events of an
// attack are still the attack).
const alertGrace = 2 * time.Minute

// matches reports whether an alert is about an attack, within the attack's
// window: same device, API key or client IP; for an attack spread over
// devices and addresses, one of its devices or addresses; for an entity
// alert, its entity is the attack's address, a network holding one of its
// addresses, or its key; for a tenant alert, the tenant of an attack spread
// thin over it (sim.AttackTenantSpread); for a class alert, a class of the
// class of devices of an attack spread over many.
func matches(l sim.Label, a StoredAlert) bool {
	if a.Time.Before(l.Start) || a.Time.After(l.End.Add(alertGrace)) {
		return false
	}
	if (l.Device != "" && a.Device == l.Device) || (l.APIKey != "" && a.APIKey == l.APIKey) || (l.IP != "" && a.ClientIP == l.IP) {
		return true
	}
	if (a.Device != "" && slices.Contains(l.Devices, a.Device)) || (a.ClientIP != "" && slices.Contains(l.IPs, a.ClientIP)) {
		return true
	}
	return a.Entity != "" && entityMatches(l, a.EntityKind, a.Entity)
}

// entityMatches reports whether an entity (kind, value) is one of l's
// attackers: its address (or one of them), a network holding one, its key,
// the tenant it spreads over.
func entityMatches(l sim.Label, kind, value string) bool {
	switch kind {
	case incident.KindIP:
		return value == l.IP || slices.Contains(l.IPs, value)
	case incident.KindPrefix:
		p, err := netip.ParsePrefix(value)
		if err != nil {
			return false
		}
		in := func(ip string) bool {
			addr, err := netip.ParseAddr(ip)
			return err == nil && p.Contains(addr.Unmap())
		}
		return (l.IP != "" && in(l.IP)) || slices.ContainsFunc(l.IPs, in)
	case incident.KindAPIKey:
		return l.APIKey != "" && value == l.APIKey
	case schemas.EntityTenant:
		// Only an attack on the tenant as a whole: a tenant alert during
		// one device's attack is not that attack's finding.
		return l.Type == sim.AttackTenantSpread && value == l.Tenant
	case schemas.EntityClass:
		// A class holding devices of an attack spread over many (the
		// tenant's, a flood's).
		return slices.Contains(l.Classes, value)
	}
	return false
}

// Evaluate matches alerts and decisions to the labelled attacks (matches:
// device, API key or client IP, within the attack's window plus alertGrace)
// over a fleet of devices observed for span. Alerts are counted as groups
// (StoredAlert.Group): the alerts of one group are one, true when any of
// them matches a label; a decision is false when its alert's group is.
func Evaluate(labels []sim.Label, alerts []StoredAlert, ds []StoredDecision, devices int, span time.Duration) Report {
	r := Report{Alerts: len(alerts), Decisions: len(ds), Devices: devices, Duration: span}
	byAlert := map[string]StoredDecision{}
	for _, d := range ds {
		byAlert[d.AlertID] = d
	}
	matched := make([]bool, len(alerts))
	for _, l := range labels {
		res := attackResult{Label: l}
		seen := map[string]bool{}
		incidents := map[string]bool{}
		for i, a := range alerts {
			if !matches(l, a) {
				continue
			}
			matched[i] = true
			res.Alerts++
			if a.Incident != "" && !incidents[a.Incident] {
				incidents[a.Incident] = true
				res.Incidents++
			}
			if !res.Detected {
				res.Detected, res.TTD = true, a.Time.Sub(l.Start)
			}
			for j, reason := range a.Reasons {
				k := reason
				if j < len(a.Detectors) {
					k = a.Detectors[j] + "/" + reason
				}
				if !seen[k] {
					seen[k] = true
					res.Reasons = append(res.Reasons, k)
				}
			}
			if d, ok := byAlert[a.ID]; ok && res.Blocked == "" {
				res.Blocked = d.Scope + "=" + d.Value
			}
		}
		r.Attacks = append(r.Attacks, res)
	}
	all, onAttack := map[string]bool{}, map[string]bool{}
	for i, a := range alerts {
		if a.Incident != "" {
			all[a.Incident] = true
			if matched[i] {
				onAttack[a.Incident] = true
			}
		}
	}
	r.Incidents, r.FalseIncidents = len(all), len(all)-len(onAttack)
	// An alert group (schemas.Alert.Group: an alert and the later alerts of
	// its group, see decide.Engine.Decide) is true when any of its alerts
	// matches a label, and counts once.
	trueGroups, groups := map[string]bool{}, map[string]bool{}
	for i, a := range alerts {
		groups[a.group()] = true
		if matched[i] {
			trueGroups[a.group()] = true
		}
	}
	r.Alerts = len(groups)
	falseGroups, falseAlertIDs := map[string]bool{}, map[string]bool{}
	for _, a := range alerts {
		if trueGroups[a.group()] {
			continue
		}
		falseAlertIDs[a.ID] = true
		if !falseGroups[a.group()] {
			r.FalseAlerts = append(r.FalseAlerts, a)
			falseGroups[a.group()] = true
		}
	}
	for _, d := range ds {
		if falseAlertIDs[d.AlertID] {
			r.FalseBlocks++
		}
	}
	return r
}

func (r Report) String() string {
	var b strings.Builder
	r.Print(&b)
	return b.String()
}

// Print writes the report as the demo prints it: a table of the attacks, then
// the totals and the false alerts by reason.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\nInjected attacks (labels never reach the detectors):\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tTYPE\tTARGET\tDETECTED\tTIME TO DETECT\tBLOCKED\tREASONS")
	detected := 0
	for _, a := range r.Attacks {
		target := a.Label.Device
		if target == "" {
			target = a.Label.APIKey
		}
		det, ttd, blocked := "NO", "-", a.Blocked
		if a.Detected {
			detected++
			det, ttd = "yes", a.TTD.Round(time.Second).String()
		}
		if blocked == "" {
			blocked = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Label.ID, a.Label.Type, target, det, ttd, blocked, strings.Join(a.Reasons, ", "))
	}
	tw.Flush()
	hours := float64(r.Devices) * r.Duration.Hours()
	fmt.Fprintf(w, "\nDetected %d of %d attacks. Alerts: %d in all, %d false (%.2f per 1,000 device-hours). Decisions: %d, %d of them on false alerts.\n",
		detected, len(r.Attacks), r.Alerts, len(r.FalseAlerts), float64(len(r.FalseAlerts))/hours*1000, r.Decisions, r.FalseBlocks)
	if len(r.FalseAlerts) > 0 {
		counts := map[string]int{}
		for _, a := range r.FalseAlerts {
			counts[strings.Join(a.Reasons, "+")]++
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return counts[keys[i]] > counts[keys[j]] || (counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j])
		})
		fmt.Fprintf(w, "False alerts by reason:")
		for _, k := range keys {
			fmt.Fprintf(w, " %s=%d", k, counts[k])
		}
		fmt.Fprintln(w)
	}
}
