package schemas

import "time"

// Incident groups the alerts of one campaign: alerts that share an entity
// (device, client IP, its /24 or /48, API key, an entity alert's entity), a
// campaign signature (the same reason on the same command across devices) or
// a short span. It is published on iotwatch.incidents.<severity> (stream
// StreamIncidents) and stored in the incidents table (TableIncidents).
//
// ID is deterministic: derived from its earliest alert (event time, then alert
// id), whatever order the alerts arrive in, so that a redelivery or another
// interleaving of the same alerts names the same incident; an id that stops
// naming a live incident is retired (MergedInto, see pipeline/incident). An
// incident is rewritten as it grows: every update has the same ID and a higher
// Version (the number of alerts folded into it), so the table's
// ReplacingMergeTree keeps the latest and JetStream's duplicate window drops a
// republished update (Nats-Msg-Id is ID and Version). As its severity rises
// with its breadth, an incident's later updates may be on a higher severity's
// subject than its first: consumers key incidents by ID and keep the highest
// Version.
type Incident struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	// Tenant is the earliest alert's tenant.
	Tenant string `json:"tenant"`
	// FirstSeen is the time of its earliest alert (the one that names the
	// incident, so it never changes for an id), LastSeen the latest alert's.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Severity is the highest of its alerts' severities, raised by breadth
	// (see package pipeline/incident).
	Severity string  `json:"severity"`
	Score    float64 `json:"score"` // the highest alert score
	Alerts   int     `json:"alerts"`
	// Devices counts the distinct devices of its alerts (exact up to a bound,
	// then a lower bound); DeviceSample names some of them.
	Devices      int      `json:"devices"`
	DeviceSample []string `json:"device_sample"`
	// Entities names distinct entities as kind:value (ip:198.51.100.7,
	// prefix:198.51.100.0/24, api_key:k-1); EntityCount counts them (exact up
	// to a bound).
	Entities    []string `json:"entities"`
	EntityCount int      `json:"entity_count"`
	// Reasons are the distinct detector/reason of its alerts' findings.
	Reasons []string `json:"reasons"`
	// Decisions are ids of decisions taken on its alerts;
	// DecisionCount counts them all. Samples (DeviceSample, Entities,
	// Decisions, Reasons) hold the smallest values, sorted (entities:
	// addresses, then networks, then keys), so they do not depend on the
	// order the alerts arrived in.
	Decisions     []string `json:"decisions"`
	DecisionCount int      `json:"decision_count"`
	FirstAlertID  string   `json:"first_alert_id"`
	LastAlertID   string   `json:"last_alert_id"`
	// MergedInto, when set, retires this id: its alerts now belong to the
	// incident of that id (two incidents joined by an alert that belongs to
	// both, or an incident renamed after an earlier alert). The retirement
	// is the id's last and highest version; an analyst's view of incidents
	// skips retired ids (WHERE merged_into = '' with FINAL).
	MergedInto string `json:"merged_into,omitempty"`
	SchemaV    int    `json:"v"`
}
