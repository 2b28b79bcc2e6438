package schemas

import (
	"bytes"
	"time"
)

// Label is a short categorical value in a finding (a country code, an ASN, a
// truncated command), stored inline so that findings never allocate.
type Label [16]byte

// MakeLabel copies up to 16 bytes of b.
func MakeLabel(b []byte) Label {
	var l Label
	copy(l[:], b)
	return l
}

// LabelString is MakeLabel for a string.
func LabelString(s string) Label {
	var l Label
	copy(l[:], s)
	return l
}

func (l Label) String() string {
	n := bytes.IndexByte(l[:], 0)
	if n < 0 {
		n = len(l)
	}
	return string(l[:n])
}

// Finding is one detector's judgement of one event: a score in [0,1], a reason
// from the detector's declared list, and the observed and expected values that
// explain it. A zero Finding means "nothing unusual".
type Finding struct {
	Detector string // the detector's registered name (its package's Name: volume.Name)
	Reason   string // one of the reasons the detector declared (volume.ReasonRateSpike), or ReasonNone
	Score    float32
	Observed float64
	Expected float64
	// Labels explain categorical findings ("DE" observed, "FR" expected); empty otherwise.
	ObservedLabel Label
	ExpectedLabel Label
}

// MaxFindings bounds the findings kept per event.
const MaxFindings = 8

// Scored is an event's result: the combined score and the non-zero findings.
type Scored struct {
	Score    float32
	N        int
	Findings [MaxFindings]Finding
}

// Add appends f if it has a reason and there is room.
func (s *Scored) Add(f Finding) {
	if f.Reason == ReasonNone || s.N == MaxFindings {
		return
	}
	s.Findings[s.N] = f
	s.N++
}

// Reasons returns the findings in s.
func (s *Scored) Reasons() []Finding { return s.Findings[:s.N] }

// Explanation is a finding as stored and published (JSON, ClickHouse).
type Explanation struct {
	Detector      string  `json:"detector"`
	Reason        string  `json:"reason"`
	Score         float64 `json:"score"`
	Observed      float64 `json:"observed"`
	Expected      float64 `json:"expected"`
	ObservedLabel string  `json:"observed_label,omitempty"`
	ExpectedLabel string  `json:"expected_label,omitempty"`
}

// Explain converts a finding for storage.
func Explain(f Finding) Explanation {
	return Explanation{
		Detector: f.Detector, Reason: f.Reason, Score: float64(f.Score),
		Observed: f.Observed, Expected: f.Expected,
		ObservedLabel: f.ObservedLabel.String(), ExpectedLabel: f.ExpectedLabel.String(),
	}
}

// Alert is published on iotwatch.alerts.<severity> and stored in the alerts table.
// ID is deterministic (device, reasons, first event id), so a redelivered event
// produces the same alert id and JetStream's duplicate window drops the copy.
type Alert struct {
	ID     string    `json:"id"`
	Time   time.Time `json:"time"`
	Tenant string    `json:"tenant"`
	Device string    `json:"device"`
	// EntityKind and Entity name the entity the alert is about when it is
	// not a device (EntityIP, EntityPrefix, ...; see EntityKinds): Entity
	// is its text ("198.51.100.7", "198.51.100.0/24"). Both are empty for a
	// device's alert (EntityDevice).
	EntityKind   string        `json:"entity_kind,omitempty"`
	Entity       string        `json:"entity,omitempty"`
	APIKey       string        `json:"api_key,omitempty"`
	ClientIP     string        `json:"client_ip,omitempty"`
	Class        string        `json:"class,omitempty"`
	Command      string        `json:"command,omitempty"`
	Country      string        `json:"country,omitempty"`
	Score        float64       `json:"score"`
	Severity     string        `json:"severity"`
	Reasons      []Explanation `json:"reasons"`
	FirstEventID uint64        `json:"first_event_id"`
	LastEventID  uint64        `json:"last_event_id"`
	// Group is the alert group the alert belongs to: the ID of the alert that
	// opened it (the alert's own ID for the first). One device and reason
	// over a span of findings less than a cool-down apart is one group; a
	// higher severity or a block within it is a further alert of the group
	// (pipeline/decide.Engine.Decide). Count groups, not alerts, for "how
	// many times was the SOC alerted".
	Group string `json:"group"`
	// FalseRate is the estimated false-alarm rate of the alert's class and
	// cause at its score, in false alerts per 1,000 device-hours, from the
	// pipeline's calibration (pipeline/decide.Calibration): 0 when the
	// pipeline has none, or its tail is rarer than the margin it discounts.
	FalseRate float64 `json:"false_alerts_per_1000h"`
	SchemaV   int     `json:"v"`
}

// Decision is published on iotwatch.decisions.<action> and, while active, kept in
// the KV bucket KVActiveBlocks under KVKey(Scope, Value).
type Decision struct {
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	Scope     string    `json:"scope"`
	Value     string    `json:"value"`
	Tenant    string    `json:"tenant"`
	Device    string    `json:"device"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Reason    string    `json:"reason"`
	Score     float64   `json:"score"`
	AlertID   string    `json:"alert_id"`
	Issuer    string    `json:"issuer"`
	DryRun    bool      `json:"dry_run,omitempty"`
	// Revision orders the decisions of one KV key (Scope and Value): blocks,
	// throttles and unblocks share it, and an enforcement point applies a
	// decision only if its Revision is higher than the last it applied for
	// the key, so an old signed decision replayed into the bucket cannot
	// override a newer one. It is a hybrid clock, NextRevision of the key's
	// current revision: the signer's wall clock in Unix nanoseconds, or one
	// more than the key's current revision when that is not lower. 0 (a
	// decision signed before revisions existed) is older than any other.
	// Covered by the signature (layout v2, see sign.go).
	Revision uint64 `json:"rev,omitempty"`
	// Signature is reserved for signed decisions (ed25519); empty in schema v1.
	Signature string `json:"signature,omitempty"`
	SchemaV   int    `json:"v"`
}

// NextRevision returns the revision of a decision that replaces one of
// revision prev under the same KV key, signed at now: now in Unix nanoseconds,
// or prev+1 when that is higher (a signer whose clock is behind the previous
// signer's still moves the key forward).
func NextRevision(prev uint64, now time.Time) uint64 {
	r := uint64(max(now.UnixNano(), 0))
	if r <= prev {
		r = prev + 1
	}
	return r
}

// KVKey is the key of an active decision in KVActiveBlocks: "<scope>.<hex value>".
// The value is hex-encoded because KV keys allow only [-_=/.A-Za-z0-9].
func KVKey(scope, value string) string {
	const hexdigits = "0123456789abcdef"
	b := make([]byte, 0, len(scope)+1+2*len(value))
	b = append(b, scope...)
	b = append(b, '.')
	for i := 0; i < len(value); i++ {
		b = append(b, hexdigits[value[i]>>4], hexdigits[value[i]&15])
	}
	return string(b)
}
