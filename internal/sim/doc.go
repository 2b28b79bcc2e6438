// Package fleet simulates a fleet of IoT devices talking to their cloud through
// API gateways (HTTP) and MQTT brokers, and injects labelled attacks modelled
// on real incidents. It feeds `iotwatch demo`, the end-to-end benchmark and the
// evaluation: the events go through the pipeline like real access logs, and the
// labels, written to a separate file, tell the evaluation what was injected.
// Detectors never see the labels, and nothing in an event says whether it is
// part of an attack.
//
// # Output
//
// Each event is one canonical JSON line (see schemas/codec.go) as a gateway or
// broker logs a RAW request: method+path for HTTP, op+topic for MQTT, with the
// real device ids in the path ("POST /v1/devices/lock-000042/unlock"); the
// pipeline normalizes them. A numeric argument travels as a gateway logs it, in
// the query string ("PUT /v1/devices/therm-000042/setpoint?temp=21.5"), which
// the decoder turns into Event.Args. Every line has ts (RFC 3339, milliseconds, UTC),
// src, src_id (kong-<region>-N, emqx-<region>-1), tenant, device, id_by,
// api_key (API-key devices only), class, fw, ip, country and asn (as a gateway
// with GeoIP enrichment logs them), proto, status, auth, bytes_in, bytes_out
// and latency_ms. Device ids are <prefix>-<six digits>, numbered per class.
//
// The run is fixed by Config.Seed: the same Config gives the same bytes. Each
// device has its own random stream and the events of all devices and attacks
// are merged through a min-heap of next-fire times, so generation costs
// O(log n) per event and allocates nothing (see BenchmarkNext). With the
// defaults (2000 devices, 3 hours) a run has about 340 000 events.
//
// # Tenants and places
//
// Six tenants with home countries: hausnetz (DE), maison-connectee (FR),
// northstar (US, CA), sakura-iot (JP), casa-viva (BR, AR) and globex (DE, US,
// JP). A device lives in one of its tenant's countries; its stable home IP
// comes from that country's residential range (vehicles: mobile range).
// Networks lists the made-up ranges with their country and ASN, for building a
// GeoIP database. Daily cycles follow the device's local time.
//
// # Classes
//
// Every class has a grammar: a small Markov chain of commands, where each
// command sets the mean gap to the next event (with jitter) and some
// transitions ("day" edges) are weighted by the class's daily multiplier for the
// local hour. Per 20 devices: 6 thermostats, 2 cameras, 3 locks, 6 meters, 3
// vehicles.
//
//   - thermostat/acme-t100 (HTTP, api_key): POST …/telemetry every ~60 s, faster
//     in the morning and evening (×0.7 at night to ×1.3); now and then GET
//     …/config or GET …/schedule. About four times a day (a day edge, so
//     about 3.4 times as often at the morning and evening peaks as at night)
//     the owner's app, on the home network, sets the temperature: PUT
//     …/setpoint?temp=21.5, near the owner's preferred temperature (18-24 °C,
//     drawn per device): within ±1 °C of it, or 3-4 °C below it for an eco
//     setting 15% of the time, in 0.5 °C steps. The setpoint is the only
//     command with an argument.
//   - camera/vistacam-c2 (HTTP, api_key): POST …/media every ~10 s with
//     120-900 KB bodies (×0.6 at night to ×1.2 by day); motion events (POST
//     …/events) and GET …/stream-token mostly by day.
//   - smart_lock/keyless-l3 (MQTT, mqtt_client_id): PUBLISH devices/<id>/status
//     every ~120 s, battery reports; a few times a day, mostly mornings and
//     evenings, the owner's app unlocks the door and the lock publishes
//     devices/<id>/unlock, then devices/<id>/lock when it relocks. Unlock is
//     therefore legitimate for this class. After an outage: CONNECT, SUBSCRIBE
//     devices/<id>/cmd/#.
//   - meter/gridline-m1 (HTTP, certificate): POST …/readings every 300 s around
//     the clock (flat cycle), rarely GET …/config or POST …/alarms. Telemetry
//     only: a meter never issues unlock or firmware commands.
//   - vehicle/volta-v8 (HTTP, api_key, mobile networks): parked, POST
//     …/heartbeat every ~10 min; trips start by the daily cycle (rush hours, hardly
//     at night) with POST …/trips, then POST …/telemetry every ~30 s while
//     driving (~16 min on average), then POST …/trips/end. Rare GET …/config
//     and POST …/diagnostics.
//
// # Benign irregularities
//
// Legitimate traffic is clean enough not to flood detectors with alerts, but
// not trivially clean, so that false alerts can be counted:
//
//   - about 0.2% of HTTP requests fail with 5xx (retried 1-4 s later), 0.08%
//     get a 4xx (429 is retried after 10-30 s), 0.05% fail authentication with
//     an expired token (401, then a successful retry); MQTT publishes
//     occasionally fail (reason code 128) and are retried;
//   - about 2% of the devices go offline for 20-90 minutes, then come back with
//     a short backlog burst (HTTP) or a reconnect (MQTT);
//   - about 1% get a new DHCP lease: a new IP in the same network;
//   - the vendor's OTA campaign updates a few thermostats and cameras (0.5% of
//     the fleet): GET …/firmware/latest, GET /v1/firmware/<model>/<version>,
//     POST …/firmware/status, after which their fw changes;
//   - about 1% of the vehicles near a border drive abroad for 40-120 minutes
//     (DE↔FR, US↔CA, BR↔AR) and show the neighbour's mobile network and country;
//   - locks unlock a few times a day; meters send a rare alarm; thermostat
//     owners change the setpoint, whose value varies by device and by time.
//
// # Attacks
//
// With Config.Attacks, max(1, Devices/1000) instances of each type start after
// the warm-up (Config.AttackStart, 60% of the run by default), on distinct
// victims picked from the seed, and never on a device with a benign
// irregularity. Each has a Label giving the device, its tenant, the API key,
// the IP the attack came from, and the times of its first and last events. The
// device's own traffic continues during the attack.
//
//   - flood: one device sends its main command at 20-50× its normal rate for
//     3-8 minutes from its home address; after a minute the gateway answers some
//     requests with 429. Modelled on compromised devices flooding a backend, as
//     the Mirai cameras and DVRs did to Dyn in 2016, and on firmware retry storms.
//   - stolen_api_key: a device's API key is used for 10-25 minutes from a hosting
//     network in another country, with a scripting user agent, for the device's
//     normal commands and reads of other data (owner, history, account devices,
//     recordings). Modelled on the 2021 Verkada breach, where credentials found
//     exposed on the internet gave outsiders access to customers' cameras.
//   - privileged_command: a telemetry-only meter or thermostat issues POST
//     /v1/devices/<its id>/unlock and POST /v1/devices/<its id>/firmware, never
//     seen for it or its class, from its own address. Modelled on devices used
//     as a foothold: the casino whose aquarium thermometer was used to reach its
//     network (2017), and the remote firmware reflash of the 2015 Jeep hack.
//   - enumeration: one device's credential requests GET
//     /v1/devices/<other id>/status for 80-300 sequential ids of its class in 2-6
//     minutes from a home broadband address; 404 past the last device, 403 for
//     other owners' devices, and 200 for a few (the IDOR works). Modelled on the
//     vehicle API incidents where an id alone gave access to other cars: the
//     Nissan Leaf API keyed by VIN (2016) and the automaker APIs that Sam Curry
//     and others showed open to enumeration (2022-2024).
//   - auth_failures: a burst of failed authentications (POST /v1/auth/token, 401,
//     auth "failed") against one device's API key every 0.4-4.5 s for 3-10
//     minutes from a hosting network: credential stuffing, as against Ring camera
//     accounts in 2019.
//   - param_tampering: a thermostat's own API key, from its own home address,
//     sets PUT /v1/devices/<its id>/setpoint to a dangerous value, 85-95 °C (or,
//     in a quarter of the attacks, -40 °C), about 3-6 times in 2-6 minutes; the
//     API accepts it (200). Command, key, address and rate are the device's
//     usual ones: only the argument is wrong, far outside the 14-25 °C its
//     class sets. Modelled on the abuse of a device's own control API with
//     out-of-range values: hijacked smart-home accounts whose thermostats were
//     turned up to about 90 °F (reported in the US in 2019), and the 2021
//     intrusion at the Oldsmar, Florida, water treatment plant, where a remote
//     operator raised a sodium hydroxide setpoint a hundredfold.
//
// # Attacks spread over devices and addresses
//
// With Config.Entities (and Attacks), both models also inject max(1,
// Devices/1000) of each of EntityAttackTypes, from their own random streams,
// so that every other line of the run is the line of the same Config without
// it: credential stuffing (one hosting address, one failed login against each
// of 250-350 devices' API keys), a distributed flood (1,000-1,500 addresses
// never seen, residential and mobile, each sending 4-8 requests within
// seconds on one class's main route of 20-40 devices, in 3-6 minutes) and a
// leaked API key (one device's key used from 40-80 addresses of several
// countries over 20-40 minutes). Their labels list every device
// (Label.Devices) and address (Label.IPs) involved (campaign.go).
//
// # A second model
//
// Everything above is ModelBasic, the model the detectors were developed and
// tuned on: figures on it are in-sample. ModelField (field.go,
// fieldclasses.go, fieldattack.go; Config.Model, Open) is an independent
// fleet for judging them on traffic they never saw: other vendors and paths,
// traffic processes instead of a grammar (periodic, thinned Poisson and
// heavy-tailed sessions, log-normal sizes), per-country daily peaks,
// household NAT shared by several devices, carrier NAT moving every ~45
// minutes, border crossings, devices joining mid-run, a class-wide firmware
// rollout, fleet-wide 503 incidents with backoff retries, upload-heavy
// cameras. Its attacks are the six above plus AttackClone, AttackOddHours,
// AttackUploadExfil, AttackDownloadGrowth and AttackStolenKeyNoGeo (lines
// without country or ASN); benign look-alikes are labelled as near misses
// (NearMissKinds, Fleet.NearMisses) so that the false alerts on each can be
// counted. The field model's lines have the same fields as the basic model's.
package sim
