package schemas

import "time"

// Incident groups the alerts of one campaign: alerts that share an entity
// (device, client IP, its /24 or /48, API key, an entity alert's entity), a
// campaign signature (the same reason on the same command across devices) or
// a short span. It is published on iotwatch.incidents.<severity> (stream
// StreamIncidents) and stored in the incidents table (TableIncidents).
//
// ID is deterministic: derived from the first alert grouped into it, so that a
// redelivery, which brings the same alerts again, names the same incident. An
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
	// Tenant is the first alert's tenant.
	Tenant string `json:"tenant"`
	// FirstSeen is the time of the first alert grouped (the one that names
	// the incident; it never changes), LastSeen the latest alert's time.
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// Severity is the highest of its alerts' severities, raised by breadth
	// (see package pipeline/incident).
	Severity string  `json:"severity"`
	Score    float64 `json:"score"` // the highest alert score
	Alerts   int     `json:"alerts"`
	// Devices counts the distinct devices of its alerts (exact up to a bound,
	// then a lower bound); DeviceSample names the first of them.
	Devices      int      `json:"devices"`
	DeviceSample []string `json:"device_sample"`
	// Entities names the first distinct entities as kind:value (ip:198.51.100.7,
	// prefix:198.51.100.0/24, api_key:k-1); EntityCount counts them (exact up
	// to a bound).
	Entities    []string `json:"entities"`
	EntityCount int      `json:"entity_count"`
	// Reasons are the distinct detector/reason of its alerts' findings.
	Reasons []string `json:"reasons"`
	// Decisions are the ids of the first decisions taken on its alerts;
	// DecisionCount counts them all.
	Decisions     []string `json:"decisions"`
	DecisionCount int      `json:"decision_count"`
	FirstAlertID  string   `json:"first_alert_id"`
	LastAlertID   string   `json:"last_alert_id"`
	SchemaV       int      `json:"v"`
}
