package schemas

import (
	"net/netip"
	"time"
)

// SourceKind says what kind of enforcement point wrote the log.
type SourceKind uint8

const (
	SourceUnknown SourceKind = iota
	SourceGateway
	SourceBroker
)

var sourceNames = [...]string{"unknown", "gateway", "broker"}

func (k SourceKind) String() string {
	if int(k) < len(sourceNames) {
		return sourceNames[k]
	}
	return "unknown"
}

// IDMethod says how the device was identified, from strongest to weakest.
type IDMethod uint8

const (
	IDUnknown IDMethod = iota
	IDCertificate
	IDAPIKey
	IDToken
	IDMQTTClient
	IDMQTTUsername // the username an MQTT client logged in with
	IDClientIP
)

var idNames = [...]string{"unknown", "certificate", "api_key", "token", "mqtt_client_id", "mqtt_username", "client_ip"}

func (m IDMethod) String() string {
	if int(m) < len(idNames) {
		return idNames[m]
	}
	return "unknown"
}

// Protocol is the application protocol of the request.
type Protocol uint8

const (
	ProtoUnknown Protocol = iota
	ProtoHTTP
	ProtoMQTT
	ProtoCoAP
)

var protoNames = [...]string{"unknown", "http", "mqtt", "coap"}

func (p Protocol) String() string {
	if int(p) < len(protoNames) {
		return protoNames[p]
	}
	return "unknown"
}

// AuthOutcome is the result of authentication as the enforcement point saw it.
type AuthOutcome uint8

const (
	AuthUnknown AuthOutcome = iota
	AuthOK
	AuthFailed
	AuthNone // no authentication attempted
)

var authNames = [...]string{"unknown", "ok", "failed", "none"}

func (a AuthOutcome) String() string {
	if int(a) < len(authNames) {
		return authNames[a]
	}
	return "unknown"
}

// Verdict is the enforcement point's own verdict on the request, when its log
// carries it (the shipped NGINX, Envoy and Traefik configs log the status of
// the auth subrequest to iotwatch's enforcer and its action header). A request
// the enforcement point refused because of an iotwatch decision, or could not
// check because the enforcer was down, is not the device's behaviour: the
// worker stores it but neither scores nor learns it.
//
// The names (String) are user-facing: the canonical JSON field "verdict" and
// the ClickHouse column verdict hold them.
type Verdict uint8

const (
	// VerdictNone: the log does not say (no enforcer in the path, or a format
	// or config that does not log it). The event is judged as the device's.
	VerdictNone Verdict = iota
	// VerdictAllowed: the enforcer was asked and let the request through.
	VerdictAllowed
	// VerdictDenied: the enforcement point refused the request because of an
	// iotwatch decision (HTTP: the auth subrequest answered 403 with the
	// X-Iotwatch-Action header, schemas.HeaderEnforceAction).
	VerdictDenied
	// VerdictUnavailable: the enforcer could not be asked (HTTP: the auth
	// subrequest failed or answered 500, 502, 503 or 504), so the gateway
	// answered an error of its own.
	VerdictUnavailable
)

var verdictNames = [...]string{"none", "allowed", "denied", "enforcer_unavailable"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "none"
}

// ParseVerdict returns the verdict named s (see String); "" is VerdictNone.
// It does not allocate.
func ParseVerdict(s []byte) (Verdict, bool) {
	if len(s) == 0 {
		return VerdictNone, true
	}
	for i, n := range verdictNames {
		if string(s) == n {
			return Verdict(i), true
		}
	}
	return VerdictNone, false
}

// Enforced reports whether the request's outcome was the enforcement point's
// doing rather than the device's: denied by an iotwatch decision, or failed
// because the enforcer was unavailable.
func (v Verdict) Enforced() bool { return v == VerdictDenied || v == VerdictUnavailable }

// Country is an ISO 3166-1 alpha-2 code; the zero value means unknown.
type Country [2]byte

func (c Country) String() string {
	if c == (Country{}) {
		return ""
	}
	return string(c[:])
}

// Known reports whether the country is set.
func (c Country) Known() bool { return c != (Country{}) }

// Event is one normalized request as an enforcement point logged it.
//
// Byte-slice fields point into the Event's own arena and are valid until the
// Event is reset or decoded into again: a consumer that keeps a value past that
// must copy it. An Event is owned by one goroutine at a time.
type Event struct {
	// ID is stable across redelivery: EventID of the stream sequence and the
	// line within the message, never a producer-supplied id, so no producer
	// can choose (and overwrite) another's row.
	ID uint64
	// Seq is the JetStream stream sequence of the message that carried the event, and
	// Line its 0-based line in that message.
	Seq  uint64
	Line uint32

	// Time is the event time from the log (Unix nanoseconds), not arrival time.
	Time int64

	Source   SourceKind
	SourceID []byte
	Tenant   []byte
	Device   []byte // device id; when the device is identified only by IP, the IP text
	IDMethod IDMethod
	APIKey   []byte // API key id (never the secret)
	Class    []byte // device class: model (and firmware) used as the cold-start prior
	Firmware []byte // user agent or firmware version

	ClientIP netip.Addr
	Country  Country
	ASN      uint32
	// Lat and Lon are the client's approximate coordinates in degrees, from the
	// log or a GeoIP database; both zero means unknown. They are not part of the
	// canonical encoding: an enrichment stage sets them after decoding.
	Lat, Lon float32

	Protocol Protocol
	// Command is the normalized command: "POST /v1/devices/{id}/unlock",
	// "PUBLISH devices/{id}/cmd/unlock". Identifiers are replaced by placeholders.
	Command []byte
	// Resource is a hash of the identifiers the normalizer replaced (0 if none):
	// which device or object the command addressed, without growing the vocabulary.
	Resource uint64
	// ResourceText is the text of those identifiers ("lock-000042", or
	// "acct-9/lock-17" for several), joined by '/', at most MaxResourceText
	// bytes: what an analyst reads for an enumeration's targets. Set by
	// SetRawCommand; not part of the canonical encoding (a consumer of it
	// normalizes the raw path itself), carried by the Arrow event schema.
	ResourceText []byte
	// Args are the command's numeric arguments (the log's "args", or numeric
	// query parameters the normalizer dropped from Command): NArgs of them,
	// see ArgList and SetArg.
	Args  [MaxArgs]Arg
	NArgs uint8

	Status uint16 // HTTP status, MQTT reason code, CoAP code
	Auth   AuthOutcome
	// Verdict is the enforcement point's own verdict, when the log carries it.
	Verdict  Verdict
	BytesIn  uint64
	BytesOut uint64
	Latency  uint32 // microseconds

	// Hashes computed once at decode time so that shards and detectors never rehash.
	DeviceKey uint64 // Hash2(tenant, device): the shard and state key
	DeviceAlt uint64 // Hash2Alt(tenant, device): with DeviceKey, a 128-bit state key
	ClassKey  uint64 // Hash of tenant and class
	ModelKey  uint64 // ModelKeyOf(class): the class across tenants; 0 without a class
	CommandID uint64 // Hash of the normalized command

	arena []byte
}

// ModelKeyOf returns the key of a class across tenants (the device model:
// "thermostat/acme-t100" in every tenant), 0 for no class. It is the ClassKey
// of a tenantless event of that class, so that an event without a tenant
// learns its class once.
func ModelKeyOf(class []byte) uint64 {
	if len(class) == 0 {
		return 0
	}
	return Hash2(nil, class)
}

// HasModel reports whether e's model (its class across tenants) is a view of
// its own, apart from its class: e has a class and a tenant.
func (e *Event) HasModel() bool { return e.ModelKey != 0 && e.ModelKey != e.ClassKey }

// FailedAuth reports whether the request failed authentication: an outcome
// the format decoded as failed, or an HTTP 401 (MQTT has no 401: its outcome
// says it). Such a request proves nothing about the identity it claims.
func (e *Event) FailedAuth() bool {
	return e.Auth == AuthFailed || (e.Status == 401 && e.Protocol != ProtoMQTT)
}

// EventTime returns the event time.
func (e *Event) EventTime() time.Time { return time.Unix(0, e.Time).UTC() }

// Reset clears e for reuse, keeping its arena's capacity.
func (e *Event) Reset() {
	arena := e.arena[:0]
	*e = Event{arena: arena}
}

// set copies b into the arena and returns the arena's copy.
func (e *Event) set(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	start := len(e.arena)
	if cap(e.arena)-start < len(b) {
		// Grow: earlier fields keep pointing at the old array, which stays valid.
		n := 2*cap(e.arena) + len(b)
		if n < 512 {
			n = 512
		}
		e.arena = make([]byte, 0, n)
		start = 0
	}
	e.arena = append(e.arena, b...)
	return e.arena[start : start+len(b) : start+len(b)]
}

// CopyFrom makes e a deep copy of src, reusing e's arena.
func (e *Event) CopyFrom(src *Event) {
	arena := e.arena[:0]
	*e = *src
	e.arena = arena
	e.SourceID = e.set(src.SourceID)
	e.Tenant = e.set(src.Tenant)
	e.Device = e.set(src.Device)
	e.APIKey = e.set(src.APIKey)
	e.Class = e.set(src.Class)
	e.Firmware = e.set(src.Firmware)
	e.Command = e.set(src.Command)
	e.ResourceText = e.set(src.ResourceText)
	for i := range e.NArgs {
		e.Args[i].Name = e.set(src.Args[i].Name)
	}
}

// SetDevice, SetCommand and friends set a field by copying b (for producers
// such as the simulator and tests). They recompute the derived hashes.
func (e *Event) SetDevice(tenant, device []byte) {
	e.Tenant = e.set(tenant)
	e.Device = e.set(device)
	e.DeviceKey = Hash2(e.Tenant, e.Device)
	e.DeviceAlt = Hash2Alt(e.Tenant, e.Device)
}

// SetClass sets the device class and its key.
func (e *Event) SetClass(class []byte) {
	e.Class = e.set(class)
	e.ClassKey = Hash2(e.Tenant, e.Class)
	e.ModelKey = ModelKeyOf(e.Class)
}

// setKeys sets the keys of the identity fields, as SetDevice and SetClass
// do: DeviceKey, DeviceAlt, ClassKey and ModelKey. The tenant is hashed once
// for the two keys that start with it.
func (e *Event) setKeys() {
	t := hash2Prefix(e.Tenant)
	e.DeviceKey = hash2Of(t, e.Device)
	e.DeviceAlt = Hash2Alt(e.Tenant, e.Device)
	e.ClassKey = hash2Of(t, e.Class)
	e.ModelKey = 0 // ModelKeyOf(e.Class):
	if len(e.Class) > 0 {
		e.ModelKey = e.ClassKey // the same hash without a tenant
		if len(e.Tenant) > 0 {
			e.ModelKey = hash2Of(noTenant, e.Class)
		}
	}
}

// SetCommand sets the already-normalized command and its id.
func (e *Event) SetCommand(cmd []byte) {
	e.Command = e.set(cmd)
	e.CommandID = Hash(e.Command)
}

// SetRawCommand sets Command to the normalized form of a raw request or
// operation (see Normalizer.Append), with CommandID and Resource, and adds the
// numeric parameters of the query string it dropped as arguments (see
// addQueryArgs).
func (e *Event) SetRawCommand(method, path []byte) {
	var ids resourceText
	start := len(e.arena)
	var query []byte
	e.arena, e.Resource, query = appendCommand(e.arena, &ids, method, path)
	e.Command = nil
	if len(e.arena) > start {
		e.Command = e.arena[start:len(e.arena):len(e.arena)]
	}
	e.CommandID = Hash(e.Command)
	e.ResourceText = nil
	if ids.n > 0 {
		start = len(e.arena)
		e.arena = append(e.arena, ids.b[:ids.n]...)
		e.ResourceText = e.arena[start:len(e.arena):len(e.arena)]
	}
	e.addQueryArgs(query)
}

// SetText sets one of the plain text fields.
func (e *Event) SetText(field *[]byte, b []byte) { *field = e.set(b) }
