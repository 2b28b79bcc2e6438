package entity

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// Reasons of class findings. They are user-facing (alerts, ClickHouse).
const (
	// ReasonClassAuthFailures: many more of a class's devices (one device
	// model of one tenant) failed authentication, from addresses that are
	// not their usual ones, in one window than its band (an attack spread
	// thin over the devices of one model). Observed: distinct devices;
	// Expected: its usual level.
	ReasonClassAuthFailures = "class_auth_failures"
	// ReasonClassErrors: a class's client errors (4xx other than 401 and
	// 403) in one window far beyond its band, on many of its devices.
	// Observed: errors in the window; Expected: its usual level.
	ReasonClassErrors = "class_client_errors"
	// ReasonClassRate: a class's requests in one window far beyond its band
	// (a flood spread over the devices of one model). Observed: requests in
	// the window; Expected: its usual level.
	ReasonClassRate = "class_rate_spike"
)

// A class (the device model, schemas.Event.Class) is an entity per tenant
// and class, the key the detectors' class statistics use
// (schemas.Event.ClassKey): a tenant's devices of one model share a
// deployment, a backend and a usage, so their band is tighter than the
// model's across customers, where one large tenant's volume would hide a
// small tenant's attack. It is judged as a tenant is (judgeBand), from the
// same observations and with the same record layout (kindClass), against
// lower floors: a class is a part of its tenant.
const kindClass = 7

// classNamespace keeps classes' state keys apart from other entities'.
const classNamespace = 0x636c6173735f6b79 // "class_ky"

// classKey returns the state key of ob's class (ob.Class != 0): a mix of
// the event's ClassKey, with no hashing of its text.
func (ob *Obs) classKey() (key, alt uint64) {
	key = mix(ob.Class ^ classNamespace)
	return key, mix(key ^ ob.Class ^ 0xd6e8feb86659fd93)
}

// classText returns the text of ob's class entity: its tenant, a slash and
// its class ("acme/camera/cx-200"), or its class alone without a tenant
// (schemas.ClassEntity, which device alerts are matched by).
func (ob *Obs) classText() string {
	return schemas.ClassEntity(string(ob.Key[:ob.KeyLen]), string(ob.Key[ob.KeyLen:ob.KeyLen+ob.ClassLen]))
}

// JudgeClass adds ob to a class's record rec (this owner's share of it,
// share of its traffic) as JudgeTenant does to a tenant's, against the class
// floors (Config.ClassFailDevices, ClassErrors, ClassRateEvents) and with
// the class reasons. It is pure and does not allocate.
func JudgeClass(rec []byte, ob *Obs, usual bool, share float64, c *Config, out *schemas.Scored) {
	b := classBand(c)
	judgeBand(rec, ob, usual, share, &b, c, out)
}

// classBand returns the band of a class under c.
func classBand(c *Config) band {
	return band{kind: kindClass, failDevices: c.ClassFailDevices, errors: c.ClassErrors,
		rateEvents: c.ClassRateEvents, reasonAuth: ReasonClassAuthFailures, reasonErrors: ReasonClassErrors,
		reasonRate: ReasonClassRate}
}
