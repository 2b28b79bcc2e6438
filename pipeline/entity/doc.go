// Package entity keeps baselines for what is not a device: the client IP, its
// network (/24 for IPv4, /48 for IPv6), the API key, the autonomous system, the tenant and the
// device class of a tenant, so that what spreads over many
// devices (credential stuffing from one address against hundreds of
// devices, one address using hundreds of identities) is seen.
//
// Flow: the ingest stage turns every decoded event into an Obs (ObsOf: a
// fixed-size, pointer-free observation of its client address, device key,
// auth outcome, time and stream position) and sends it to the Owner of its
// entities (Shard). An Owner is driven by one goroutine: it is the one
// writer of its entities' records, as a worker is of its devices'. A busy
// owner judges the observations waiting in its input in batches
// (ObserveBatch): their addresses' records, one random cache miss each, are
// prefetched together, then judged in order, exactly as one by one.
//
// Invariant (one writer per entity): an IP and its prefix are owned by the
// owner Shard picks from the prefix's key, a pure function of the address
// and of the owner count; an IP therefore always lands where its prefix is,
// and one Obs updates both. Across machines (issue 15) the prefix key (or
// the API key) is the entity partition key (ObsPartition): the ingest stage
// publishes each observation to its entity partition's subject
// (schemas.ObsSubject, batches of AppendObs records, wire.go), and the one
// owner of that partition judges it. An Obs is taken from its event alone
// (nothing of the device's record), so its judging needs nothing that only
// the device's owner knows.
//
// State: one fixed-size record of RecordSize bytes per entity in a
// state.Table (pointer-free slab, never scanned by the garbage collector),
// with the same header contract as device records: a layout version, then
// the stream position (sequence, line) learned up to, so that a redelivered
// event is judged against a copy and learned once. Records expire after
// Config.IdleTTL of event time; Config.MaxEntities caps them, and at the cap
// eviction takes the least recently seen entity that has no learned
// baseline and was never flagged (state.Config.Keep) before any other:
// under a flood of one-shot addresses, the flood evicts itself.
//
// Judging (judge.go) is pure, deterministic and allocation-free, over a
// tumbling window of Config.Window (5 minutes) per entity:
//
//   - credential stuffing (ReasonCredentialStuffing): failed authentication
//     for many distinct identities (devices), with most of the entity's
//     requests failing. Distinct counts are linear-counting sketches of 256
//     bits in the record (Distinct).
//   - many devices (ReasonManyDevices): many distinct devices addressed from
//     one entity, beyond what it addressed in its own past windows (a NAT
//     gateway learns its level). Alert only: its score stays under the
//     block threshold, since a shared address is not proof of an attack.
//   - rate spike (ReasonRateSpike): requests in a window far beyond the
//     entity's own learned rate (once it has one). Alert only.
//
// An API key (KeyObsOf: an event whose device is not identified by its key,
// such as a device id header sent with a tenant's key) is an entity of its
// own, owned by its own key's owner: a key used by more distinct devices,
// or from more distinct networks, in one window than the most it had in any
// window before (ReasonKeySpread: a leaked key) is alerted, and blocked
// (scope api_key) when the spread is wide. A device identified by its key is
// the key's device: the device detectors judge it (locality sees its
// networks), and it makes no key observation.
//
// A prefix counts only the failed authentications of its addresses (the
// normal path touches one record per event, the address's), and is judged
// for credential stuffing (and a rate spike of failures) with higher floors,
// and only when at least MinPrefixIPs distinct addresses of it take part:
// one address's attack is the address's, not its network's. A failure from
// a usual address (learned over a window, never found doing anything) does
// not count: when an authentication backend fails every device from its
// own network, that network is the fleet's, not a stuffing source.
//
// A botnet wave (wave.go, ReasonNewIPWave: "appears suddenly with many
// others of its kind") is judged per route (the command, schemas.Event.
// CommandID): each owner keeps, in one record per route, the addresses
// first seen a minute on it against the route's own band (learned outside
// waves; the start-up, when every address is new, is not judged), and the
// most requests a benign new address of the route sent in its first 30 s.
// During a wave, an address first seen at most 30 s before that sent more
// than that (and at least 4), or at least 4 to a device other new addresses
// address at once (swarm.go: a flood's few targets), is blocked with scope
// ip. Only an address with no record can be: a device's usual address, an
// address with a learned baseline or one that identifies its device never
// is. Such a fresh address's block counts against a budget of its own
// (decide.FreshLimiter), not the devices' per-minute cap.
//
// A flood spread thin (netwave.go, ReasonPrefixWave), whose bots send 1-3
// requests each from a few networks (a rented /24, a residential proxy
// pool), bursts from no address; what its network shows is many addresses
// first seen within a minute on one route: at least Config.PrefixNewIPs, at
// least a third of them on devices other new addresses hit at once (swarm.go).
// The network is owned where its addresses are (Shard), so each owner counts
// its networks whole, in a transient fixed-size table (netWave: no record,
// no checkpoint), only on an address's first observation; a finding blocks
// the network (scope cidr) under the devices' cap, allowlist, dry-run and
// escalation. A benign new address is one device's (a carrier NAT moving a
// vehicle, a renumbered household, a new customer's devices), never a swarm.
//
// Windows with a finding are not learned, so an attack does not teach that
// the attack is normal. A backend incident (a route answering 503 to many
// devices from their usual addresses) raises nothing here: errors are not
// authentication failures, and each address still addresses its own few
// devices.
//
// A tenant (tenant.go) is judged from its addresses' observations (an
// address's Obs carries its event's tenant, so a tenant costs no message of
// its own): each owner keeps one record per tenant for its share of the
// tenant's traffic (the addresses it owns), made with the owner route of the
// address that first brought it, as a route's record is, and judges that
// share against floors scaled by it (1/owners). It finds, against the
// tenant's own band learned outside findings: many distinct devices failing
// authentication from unusual addresses (ReasonTenantAuthFailures: an
// attack spread thin over many devices, each failing once or twice from
// addresses no device uses, which no address or network sees), client
// errors (ReasonTenantErrors) and requests (ReasonTenantRate) far beyond
// it. It is told apart from a backend incident: a server error (5xx) is the
// backend's and never judged, and a failure from a usual address (one with
// a learned window, or its device's identity) is a device failing from
// where it always is, not counted. A tenant's alert has no decision (its
// findings score under the block threshold and decide.Entity has no scope
// for it): blocking a tenant is blocking a customer. Config.NoTenant turns
// it off. A tenant id longer than MaxKeyText is not judged.
//
// A device class (class.go: the device model, schemas.Event.Class) is an
// entity per tenant and class, keyed by the event's ClassKey (what the
// detectors' class statistics key on), so that a tenant's devices of one
// model, which share a deployment and a usage, have a band of their own,
// where across tenants one large customer's volume would hide a small
// one's attack. An Obs carries its class after its tenant (Key, ClassLen;
// a class that does not fit with its tenant in MaxKeyText is not judged)
// and its ClassKey, so an owner hashes no text for it, and the class is
// judged exactly as its tenant is (judgeBand: each owner's share, the
// same record layout, usual addresses, 5xx never judged) against lower
// floors (Config.ClassFailDevices, ClassErrors, ClassRateEvents): an
// attack spread thin over one model of a tenant with many (ReasonClass*),
// too small a part of the tenant's traffic for the tenant's band. Its
// alert names the class ("class acme/camera/cx-200: 24 distinct devices
// failed auth from unusual addresses in 5m; expected about 2") and, like
// a tenant's, never comes with a decision. Config.NoClass turns it off.
//
// An autonomous system (asn.go; an Obs carries its address's ASN when the
// log or the GeoIP database knows it) is judged as a tenant is, from each
// owner's share, but only from the failed logins and client errors (4xx) of
// unusual addresses (no learned window, or ever found doing something): many
// distinct devices failing authentication (ReasonASNAuthFailures) or
// addressed with such requests (ReasonASNManyDevices: enumeration) over at
// least MinPrefixIPs of its networks, beyond its own band: credential
// stuffing and enumeration spread over many prefixes of one hosting AS, each
// too thin for its addresses and networks. A device's usual address never
// counts (an authentication outage fails devices from where they always
// are), and the normal path (a success, or a known address) touches no AS
// record. An AS
// is judged once it learned a window or once its owner is past start-up, so
// that an AS first seen in an attack is. Its alert names it
// ("AS64500 (ExampleHost)", Owner.NameAS) and never comes with a decision:
// an AS holds many customers' networks, enforcement points match addresses
// and CIDRs, and the attack's addresses and networks are blocked as
// entities of their own. Config.NoASN turns it off.
//
// An event whose device is identified only by its client IP
// (schemas.IDClientIP) is that IP's device: the device detectors judge it,
// and the IP entity skips it (it would judge the same requests twice). Its
// prefix still counts it.
//
// Decisions: an Owner's findings go through its own decide.Engine
// (DecideEntity) with the pipeline's policy and the limiter shared with the
// devices' engines: an IP is blocked with scope ip, a prefix with scope
// cidr, an API key with scope api_key, under the same allowlist, dry-run,
// per-minute cap and escalation.
package entity
