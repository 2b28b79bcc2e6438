package sim

import (
	"fmt"
	"time"
)

// Traffic models (Config.Model).
const (
	// ModelBasic is the model the detectors were developed and tuned on
	// (sim.go, classes.go, attack.go): figures on it are in-sample.
	ModelBasic = "basic"
	// ModelField is a second, independent model (field.go, fieldclasses.go,
	// fieldattack.go) with other generating assumptions: bursty sessions with
	// heavy-tailed lengths, per-country daily peaks, household and carrier
	// NAT, devices joining mid-run, class-wide firmware rollouts, backend
	// incidents, and five more attack types. No detector was tuned on it.
	ModelField = "field"
)

// Models lists the traffic models, the default first.
var Models = []string{ModelBasic, ModelField}

// Attack types of the field model only (Label.Type).
const (
	// AttackClone: the same identity from a second network in the same
	// country, same grammar and rate, while the real device keeps calling.
	AttackClone = "clone"
	// AttackOddHours: a command the device's owner issues by day, issued at
	// night (local time) from the device's usual address.
	AttackOddHours = "odd_hours_command"
	// AttackUploadExfil: a device uploads far more than it ever does (bytes in)
	// through its usual command, from its usual address.
	AttackUploadExfil = "upload_exfiltration"
	// AttackDownloadGrowth: a device's downloads (bytes out) grow slowly,
	// over an hour or more, through a command it uses.
	AttackDownloadGrowth = "download_growth"
	// AttackStolenKeyNoGeo: a stolen API key used from a hosting network whose
	// log lines carry no country and no ASN (a gateway without GeoIP).
	AttackStolenKeyNoGeo = "stolen_key_no_geo"
)

// FieldAttackTypes lists the field model's attack types, in planning order:
// every basic type, then the field model's own.
var FieldAttackTypes = append(append([]string(nil), AttackTypes...),
	AttackClone, AttackOddHours, AttackUploadExfil, AttackDownloadGrowth, AttackStolenKeyNoGeo)

// Near misses: benign events that look like an attack, labelled (Fleet.NearMisses)
// so that the false alerts they cause can be counted per kind.
const (
	// NearRollout: a firmware rollout across a class within a short span, from
	// the devices' usual networks (new firmware, command, response size).
	NearRollout = "rollout"
	// NearBorderCrossing: a vehicle driving into a neighbouring country (the
	// neighbour's carrier, country and ASN).
	NearBorderCrossing = "border_crossing"
	// NearBackendIncident: the backend answers 503 fleet-wide for minutes;
	// devices retry with backoff. Its label has no device, key or IP: it
	// covers every alert in its window.
	NearBackendIncident = "backend_incident"
	// NearOwnerHome: the real device back on its home network minutes after its
	// stolen key was used elsewhere.
	NearOwnerHome = "owner_home"
	// NearJoined: a device provisioned mid-run, in its first half hour.
	NearJoined = "device_joined"
	// NearHouseholdIPChange: a household's NAT gets a new public address;
	// every device behind it moves at once.
	NearHouseholdIPChange = "household_ip_change"
	// NearAuthOutage (with Config.Entities): one tenant's authentication
	// backend fails its devices' logins (401) for 5 minutes; each retries
	// from its usual address. The benign counterpart of AttackTenantSpread:
	// nothing tells a tenant's devices failing from where they always are
	// apart from an attack but that.
	NearAuthOutage = "auth_outage"
)

// NearMissKinds lists the near-miss kinds, in the order a false alert is
// attributed to them when several match.
var NearMissKinds = []string{NearOwnerHome, NearRollout, NearBorderCrossing, NearBackendIncident,
	NearHouseholdIPChange, NearJoined, NearAuthOutage}

// AttackTypesOf returns the attack types of a model, in planning order; nil for
// an unknown model. "" is ModelBasic.
func AttackTypesOf(model string) []string {
	switch model {
	case "", ModelBasic:
		return AttackTypes
	case ModelField:
		return FieldAttackTypes
	}
	return nil
}

// Fleet is a simulated fleet's event stream with its labels. A Fleet is not
// safe for concurrent use.
type Fleet interface {
	// Next appends the next event, in non-decreasing event-time order, to dst
	// as one canonical JSON line without a newline, and returns the extended
	// slice and the event time. ok is false (and line is dst) once the run is
	// over.
	Next(dst []byte) (line []byte, t time.Time, ok bool)
	// Labels returns every attack the run injects, known from the start. The
	// caller may modify the returned slice.
	Labels() []Label
	// NearMisses returns the benign events labelled as near misses (Type is
	// one of NearMissKinds), known from the start; nil when the model labels
	// none. The caller may modify the returned slice.
	NearMisses() []Label
	// Config returns the configuration in use, with defaults applied.
	Config() Config
	// Emitted returns how many events Next has returned.
	Emitted() int
}

// Open returns the fleet of cfg's model (ModelBasic when cfg.Model is empty).
func Open(cfg Config) (Fleet, error) {
	switch cfg.Model {
	case "", ModelBasic:
		return New(cfg)
	case ModelField:
		return NewField(cfg)
	}
	return nil, fmt.Errorf("cannot create fleet simulator: unknown Config.Model %q (want one of %q)", cfg.Model, Models)
}
