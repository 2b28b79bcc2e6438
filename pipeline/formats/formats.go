// Package formats decodes the access logs that real gateways and brokers write
// (Kong, NGINX, Envoy, Traefik, Mosquitto, EMQX) into normalized schemas.Events, next to
// the canonical JSON encoding of package schemas.
//
// A format is chosen by name (the <format> token of iotwatch.logs.<format>.<source>,
// and --format of ship and replay); New builds a Decoder for it. Every decoder
// produces the same derived fields as schemas.Decoder (DeviceKey, DeviceAlt,
// ClassKey, CommandID, Resource, ID = schemas.EventID(seq, line)), rejects a bad
// record with a *schemas.DecodeError carrying one of the schemas.DeadLetter*
// codes, and returns ErrSkip for a well-formed line that carries no event (a
// Mosquitto PINGREQ, an EMQX successful connack): count those, do not dead-letter them.
//
// Device identity is chosen per source by Options.Identity: one identity for
// every source, or rules per format and source id (see IdentityFor). When the
// chosen identity is absent from a record, the decoder falls back to the
// client IP with IDMethod client_ip (the decision scope then says "ip"); an
// MQTT username falls back to the client id first (IDMethod mqtt_client_id).
// "auto" prefers a stable identity: for MQTT the username over the client id,
// and a client id its client library or broker generated at random
// (GeneratedClientID: "auto-<uuid>", "mosq-<random>") never names a device:
// without a username such a client is identified by its IP. The identity
// decides the namespace a block is issued in (decide.IdentityScope): a device
// identified by its API key is blocked as api_key, by its MQTT username as
// mqtt_username. API keys found in clear in a log (an apikey or X-API-Key
// header) are replaced by a keyed hash (HMAC-SHA256 with Options.KeySecret,
// first 8 bytes in hex) and never stored; without a KeySecret they are
// ignored.
package formats

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/iotwatch/iotwatch/schemas"
)

// Decoder decodes one log record of a format into ev, which it resets first.
// seq and lineNo locate the record in the stream (ev.ID = schemas.EventID(seq,
// lineNo)); now is the record's arrival time (Unix ns: the stream's timestamp
// of its message), used only to bound the event time by
// schemas.ClampEventTime and Options.MaxClockSkew: a time within the bound
// after the arrival is clamped to it, one beyond is dead-lettered with
// schemas.DeadLetterTimestampOutOfRange; 0 (a replay of a file) applies
// schemas.MinEventTime alone. The error is a
// *schemas.DecodeError (valid until the next call), or ErrSkip. On error ev is
// in an unspecified state. A Decoder is not safe for concurrent use, and some
// (mosquitto) keep per-stream state: give each stream its own.
type Decoder interface {
	Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error
}

// ErrSkip reports a well-formed record that carries no event (a broker's
// keep-alive, a start-up message, the first line of a multi-line entry).
// Callers count it and move on; it is not a decode failure.
var ErrSkip = errors.New("the record carries no event")

// Options configure a decoder for one source.
type Options struct {
	// Identity selects what identifies the device: "auto" (the default: the
	// strongest stable identity the record carries: certificate, token, API
	// key, username, client id, client IP), "certificate", "api_key", "token"
	// (an authenticated principal: token subject, Kong consumer, HTTP basic-auth
	// user), "mqtt_client_id", "username", "client_ip", or "header:<name>"
	// (the value of a request header or log field, e.g. "header:X-Device-Id").
	// It may also be a comma-separated list of rules per source, such as
	// "auto,nginx=header:X-Device-Id,mosquitto=username,*.edge-2=api_key":
	// New picks the identity for its format and Source (see IdentityFor).
	Identity string
	// CountryField names a header or field holding the client's ISO country
	// code as set by a CDN or gateway in front (e.g. "CF-IPCountry"). Values
	// that are not two letters ("XX", "T1", "-") are ignored.
	CountryField string
	// ClassField names the header or field holding the device class (model,
	// firmware), e.g. "consumer.custom_id" for Kong; "user_agent_product" takes
	// the User-Agent's first product token ("acme-lock/2.4.1").
	ClassField string
	// Tenant and Source are stamped on every event (tenant is part of the
	// device key).
	Tenant string
	Source string
	// KeySecret keys the hash that replaces API keys found in clear.
	KeySecret []byte
	// MaxLineBytes rejects longer records (schemas.DefaultMaxLineBytes if 0).
	MaxLineBytes int
	// MaxClockSkew bounds how far a record's time may be ahead of its
	// arrival (schemas.DefaultMaxClockSkew if 0; see Decoder and
	// schemas.ClampEventTime).
	MaxClockSkew time.Duration
	// TimeZone is the zone of log times written without one (Mosquitto's
	// log_timestamp_format, RFC 3164 syslog prefixes): one zone ("Local",
	// "UTC" or an IANA name), or rules per format and source id as for
	// Identity ("Europe/Berlin,*.mqtt-7=UTC"; see TimeZoneFor). Without any,
	// the machine's local zone (time.Local) is used, as the broker writing
	// the log on the same machine would.
	TimeZone string
}

// Fields are matched case-insensitively with '-' and '_' equal, either as
// the whole dotted path ("consumer.custom_id"), or as a request header
// ("request.headers.<name>" for Kong, "http_<name>" for NGINX,
// "request_<Name>" for Traefik): so "CF-IPCountry" matches Kong's
// request.headers.cf-ipcountry, NGINX's http_cf_ipcountry and Traefik's
// request_Cf-Ipcountry.

type idMode uint8

const (
	idAuto idMode = iota
	idCert
	idAPIKey
	idToken
	idClientID
	idUsername
	idClientIP
	idHeader
)

// UserAgentProduct is the ClassField value that takes the User-Agent's first
// product token.
const UserAgentProduct = "user_agent_product"

type constructor func(o Options) (Decoder, error)

var registry = map[string]constructor{}

func register(name string, c constructor) {
	if _, dup := registry[name]; dup {
		panic("BUG: format " + name + " registered twice")
	}
	registry[name] = c
}

// Names returns the known format names, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// New returns a decoder for format configured by o; o.Identity may hold
// rules per source, of which New takes the one for format and o.Source (every
// rule is checked, whichever applies).
func New(format string, o Options) (Decoder, error) {
	c, ok := registry[format]
	if !ok {
		return nil, fmt.Errorf("cannot decode format %q: known formats: %s", format, strings.Join(Names(), ", "))
	}
	id, err := IdentityFor(o.Identity, format, o.Source)
	if err != nil {
		return nil, err
	}
	o.Identity = id
	zone, err := RuleFor("time zone", o.TimeZone, format, o.Source, checkZone)
	if err != nil {
		return nil, err
	}
	o.TimeZone = zone
	d, err := c(o)
	if err != nil {
		return nil, fmt.Errorf("cannot configure format %q: %w", format, err)
	}
	return d, nil
}

// isJSONArrayFormat reports whether records of format may arrive as a JSON array batch.
func isJSONArrayFormat(format string) bool {
	switch format {
	case schemas.FormatKong, schemas.FormatNginxJSON, schemas.FormatEnvoy, schemas.FormatEMQX:
		return true
	}
	return false
}

// Records appends to dst the records of one message of format: one per
// non-empty line (a trailing '\r' is dropped), and for the JSON formats other
// than canonical json a line holding a JSON array (a Kong http-log batch) is
// expanded into its elements. A malformed array stays one record, for the
// decoder to reject. The record index is the lineNo to pass to Decode.
func Records(format string, dst [][]byte, msg []byte) [][]byte {
	arrays := isJSONArrayFormat(format)
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if isBlank(line) {
			continue
		}
		if arrays && firstNonSpace(line) == '[' {
			var ok bool
			if dst, ok = splitArray(dst, line); ok {
				continue
			}
		}
		dst = append(dst, line)
	}
	return dst
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return false
		}
	}
	return true
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return c
		}
	}
	return 0
}

// base holds what every decoder shares: configuration, the identity
// candidates of the current record, and the error value.
type base struct {
	o       Options
	mode    idMode
	header  string // normalized name for idHeader
	country string // normalized CountryField
	class   string // normalized ClassField
	classUA bool
	max     int
	tenant  []byte
	source  []byte
	kind    schemas.SourceKind
	loc     *time.Location // Options.TimeZone for the decoder's format and source

	mac    hash.Hash
	macBuf [sha256.Size]byte
	keyHex [16]byte

	errv schemas.DecodeError

	rec record
}

// record is what a decoder extracted from the current line before finish.
type record struct {
	time         int64
	haveTime     bool
	cert         []byte // certificate subject CN or fingerprint
	apiKeyRaw    []byte // an API key in clear: hashed, never stored
	apiKeyID     []byte // an API key / credential id (not a secret)
	token        []byte // authenticated principal
	clientID     []byte
	username     []byte
	headerVal    []byte // the Identity header:<name> value
	ip           netip.Addr
	ipText       []byte
	country      []byte
	class        []byte
	ua           []byte
	method, path []byte
	proto        schemas.Protocol
	status       uint16
	auth         schemas.AuthOutcome
	bytesIn      uint64
	bytesOut     uint64
	latency      uint32 // µs
}

func newBase(o Options, kind schemas.SourceKind) (base, error) {
	b := base{o: o, kind: kind, tenant: []byte(o.Tenant), source: []byte(o.Source), max: o.MaxLineBytes}
	if b.max == 0 {
		b.max = schemas.DefaultMaxLineBytes
	}
	mode, header, err := parseIdentity(o.Identity)
	if err != nil {
		return b, err
	}
	b.mode, b.header = mode, header
	// New has resolved o.TimeZone to this source's one zone (or none).
	if b.loc, err = TimeZoneFor(o.TimeZone, "", ""); err != nil {
		return b, err
	}
	if len(o.KeySecret) > 0 {
		b.mac = hmac.New(sha256.New, o.KeySecret)
	}
	b.country = normName(o.CountryField)
	if o.ClassField == UserAgentProduct {
		b.classUA = true
	} else {
		b.class = normName(o.ClassField)
	}
	return b, nil
}

// parseIdentity parses one identity (not a list of rules).
func parseIdentity(id string) (idMode, string, error) {
	switch {
	case id == "" || id == "auto":
		return idAuto, "", nil
	case id == "certificate":
		return idCert, "", nil
	case id == "api_key":
		return idAPIKey, "", nil
	case id == "token":
		return idToken, "", nil
	case id == "mqtt_client_id":
		return idClientID, "", nil
	case id == "username":
		return idUsername, "", nil
	case id == "client_ip":
		return idClientIP, "", nil
	case strings.HasPrefix(id, "header:") && len(id) > len("header:"):
		return idHeader, normName(id[len("header:"):]), nil
	}
	return idAuto, "", fmt.Errorf("cannot use identity %q: want auto, certificate, api_key, token, mqtt_client_id, username, client_ip or header:<name>", id)
}

// IdentityFor returns the identity that spec (an Options.Identity) selects
// for a source of format whose source id is source (the <format> and
// <source> tokens of iotwatch.logs.<format>.<source>), after checking every
// rule of spec: "auto" when no rule applies. See RuleFor for the rules; each
// IDENTITY must be one Options.Identity accepts.
func IdentityFor(spec, format, source string) (string, error) {
	id, err := RuleFor("identity", spec, format, source, func(id string) error {
		_, _, err := parseIdentity(id)
		return err
	})
	if id == "" {
		id = "auto"
	}
	return id, err
}

// TimeZoneFor returns the zone that spec (an Options.TimeZone) selects for a
// source of format whose source id is source, after checking every rule of
// spec: time.Local when no rule applies (the machine's zone, as the broker
// writing the log on the same machine would use). See RuleFor for the rules;
// each VALUE is "Local", "UTC" or an IANA name ("Europe/Berlin").
func TimeZoneFor(spec, format, source string) (*time.Location, error) {
	zone, err := RuleFor("time zone", spec, format, source, checkZone)
	if err != nil || zone == "" {
		return time.Local, err
	}
	return time.LoadLocation(zone)
}

// checkZone checks one zone of a TimeZone spec.
func checkZone(zone string) error {
	if _, err := time.LoadLocation(zone); err != nil || zone == "" {
		return fmt.Errorf("cannot load time zone %q: want Local, UTC or an IANA name such as Europe/Berlin", zone)
	}
	return nil
}

// RuleFor returns the value that spec, a per-source setting named what,
// selects for a source of format whose source id is source ("" when no rule
// applies), after checking every rule of spec with check. spec is a
// comma-separated list of
//
//	VALUE                 the default for every source
//	FORMAT=VALUE          sources of that format ("mosquitto=username")
//	*.SOURCE=VALUE        that source id, whatever its format
//	FORMAT.SOURCE=VALUE   that format from that source id
//
// where the most specific rule wins (FORMAT.SOURCE, then *.SOURCE, then
// FORMAT, then the default). FORMAT must be a known format; a key given
// twice is an error. --identity and --log-time-zone share this syntax.
func RuleFor(what, spec, format, source string, check func(value string) error) (string, error) {
	var def, byFormat, bySource, exact string
	seen := map[string]bool{}
	for _, rule := range strings.Split(spec, ",") {
		rule = strings.TrimSpace(rule)
		if rule == "" {
			continue
		}
		key, val, keyed := strings.Cut(rule, "=")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if !keyed {
			key, val = "", rule
		}
		if keyed && key == "" {
			return "", fmt.Errorf("cannot use %s rule %q: want VALUE, FORMAT=VALUE, *.SOURCE=VALUE or FORMAT.SOURCE=VALUE", what, rule)
		}
		if seen[key] {
			if key == "" {
				return "", fmt.Errorf("cannot use %s %q: more than one default (a value without FORMAT= or *.SOURCE=)", what, spec)
			}
			return "", fmt.Errorf("cannot use %s %q: %q is given twice", what, spec, key)
		}
		seen[key] = true
		if err := check(val); err != nil {
			return "", err
		}
		f, src, hasSource := strings.Cut(key, ".")
		switch {
		case key == "":
			def = val
		case f != "*" && registry[f] == nil:
			return "", fmt.Errorf("cannot use %s rule %q: %q is not a format (known formats: %s; *.SOURCE names a source of any format)", what, rule, f, strings.Join(Names(), ", "))
		case hasSource && src == "":
			return "", fmt.Errorf("cannot use %s rule %q: empty source id", what, rule)
		case !hasSource && f == "*":
			return "", fmt.Errorf("cannot use %s rule %q: write *.SOURCE for a source of any format", what, rule)
		case !hasSource:
			if f == format {
				byFormat = val
			}
		case f == "*":
			if src == source {
				bySource = val
			}
		case f == format && src == source:
			exact = val
		}
	}
	for _, v := range [...]string{exact, bySource, byFormat, def} {
		if v != "" {
			return v, nil
		}
	}
	return "", nil
}

// normName lower-cases name and maps '-' to '_'.
func normName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' {
			return '_'
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, name)
}

// eqName compares a field path with a normalized name without allocating.
func eqName(path []byte, name string) bool {
	if len(path) != len(name) {
		return false
	}
	for i, c := range path {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == '-' {
			c = '_'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// matchField reports whether the field at path is the configured field name:
// the whole path, or a header under Kong's request.headers. or NGINX's http_.
func matchField(path []byte, name string) bool {
	if name == "" {
		return false
	}
	if eqName(path, name) {
		return true
	}
	for _, p := range [...]string{"request.headers.", "http_"} { // already normalized
		if len(path) > len(p) && eqName(path[:len(p)], p) && eqName(path[len(p):], name) {
			return true
		}
	}
	return false
}

// configured records a field's value if it is one the options name.
func (b *base) configured(path, val []byte) {
	if b.mode == idHeader && matchField(path, b.header) {
		b.rec.headerVal = val
	}
	if b.country != "" && matchField(path, b.country) {
		b.rec.country = val
	}
	if b.class != "" && matchField(path, b.class) {
		b.rec.class = val
	}
}

func (b *base) begin(line []byte, ev *schemas.Event) error {
	ev.Reset()
	b.rec = record{}
	if len(line) > b.max {
		return b.fail(schemas.DeadLetterTooLarge, "line is longer than the limit")
	}
	if !utf8.Valid(line) {
		return b.fail(schemas.DeadLetterInvalidUTF8, "line is not valid UTF-8")
	}
	return nil
}

func (b *base) fail(reason, detail string) error {
	b.errv = schemas.DecodeError{Reason: reason, Detail: detail}
	return &b.errv
}

// yearSlack is how far ahead of the arrival a time written without a year
// (RFC 3164 syslog) may be before it is taken as last year's: a day, so that
// a zone misconfigured by hours does not move a line by a year.
const yearSlack = 24 * 3600 * int64(1e9)

// finishVerdict is finish for a record that carries the enforcement
// point's verdict v: an auth failure that is the enforcer's answer is not the
// device failing to authenticate.
func (b *base) finishVerdict(ev *schemas.Event, seq uint64, line uint32, now int64, v schemas.Verdict) error {
	if v != schemas.VerdictNone && b.rec.auth == schemas.AuthFailed {
		b.rec.auth = schemas.AuthNone
	}
	if err := b.finish(ev, seq, line, now); err != nil {
		return err
	}
	ev.Verdict = v
	return nil
}

// finish resolves identity, normalizes the command and derives the same
// fields schemas.Decoder does.
func (b *base) finish(ev *schemas.Event, seq uint64, line uint32, now int64) error {
	r := &b.rec
	if !r.haveTime {
		return b.fail(schemas.DeadLetterMissingField, "the record has no time")
	}
	t, detail, ok := schemas.ClampEventTime(r.time, now, int64(b.o.MaxClockSkew))
	if !ok {
		return b.fail(schemas.DeadLetterTimestampOutOfRange, detail)
	}
	device, method := b.identity()
	if len(device) == 0 {
		return b.fail(schemas.DeadLetterMissingField, "the record identifies no device and has no client IP")
	}
	if schemas.HasControl(device) {
		return b.fail(schemas.DeadLetterBadField, schemas.DetailControlInIdentity)
	}
	ev.Seq, ev.Line, ev.ID = seq, line, schemas.EventID(seq, line)
	ev.Time = t
	ev.Source = b.kind
	ev.SourceID = nil
	ev.SetText(&ev.SourceID, b.source)
	ev.SetDevice(b.tenant, device)
	ev.IDMethod = method
	if method == schemas.IDAPIKey {
		ev.SetText(&ev.APIKey, device)
	} else if len(r.apiKeyID) > 0 {
		ev.SetText(&ev.APIKey, r.apiKeyID)
	}
	class := r.class
	if b.classUA {
		class = uaProduct(r.ua)
	}
	ev.SetClass(class)
	ev.SetText(&ev.Firmware, r.ua)
	ev.ClientIP = r.ip
	if c := r.country; len(c) == 2 && isAlpha(c[0]) && isAlpha(c[1]) && !(c[0]|0x20 == 'x' && c[1]|0x20 == 'x') {
		ev.Country = schemas.Country{c[0] &^ 0x20, c[1] &^ 0x20}
	}
	ev.Protocol = r.proto
	if ev.Protocol == schemas.ProtoUnknown {
		ev.Protocol = schemas.ProtoHTTP
	}
	ev.SetRawCommand(r.method, r.path)
	ev.Status, ev.Auth = r.status, r.auth
	ev.BytesIn, ev.BytesOut, ev.Latency = r.bytesIn, r.bytesOut, r.latency
	return nil
}

// identity picks the device id by the configured mode, falling back to the
// client IP.
func (b *base) identity() ([]byte, schemas.IDMethod) {
	r := &b.rec
	switch b.mode {
	case idAuto:
		switch {
		case len(r.cert) > 0:
			return r.cert, schemas.IDCertificate
		case len(r.token) > 0:
			return r.token, schemas.IDToken
		case len(r.apiKeyRaw) > 0 && b.mac != nil:
			return b.hashKey(r.apiKeyRaw), schemas.IDAPIKey
		case len(r.username) > 0: // stable across connections, unlike a client id
			return r.username, usernameMethod(r.proto)
		case len(r.clientID) > 0 && !(GeneratedClientID(r.clientID) && len(r.ipText) > 0):
			return r.clientID, schemas.IDMQTTClient
		}
	case idCert:
		if len(r.cert) > 0 {
			return r.cert, schemas.IDCertificate
		}
	case idAPIKey:
		if len(r.apiKeyRaw) > 0 && b.mac != nil {
			return b.hashKey(r.apiKeyRaw), schemas.IDAPIKey
		}
		if len(r.apiKeyID) > 0 {
			return r.apiKeyID, schemas.IDAPIKey
		}
	case idToken:
		if len(r.token) > 0 {
			return r.token, schemas.IDToken
		}
	case idClientID:
		if len(r.clientID) > 0 {
			return r.clientID, schemas.IDMQTTClient
		}
	case idUsername:
		if len(r.username) > 0 {
			return r.username, usernameMethod(r.proto)
		}
		if len(r.clientID) > 0 && !(GeneratedClientID(r.clientID) && len(r.ipText) > 0) { // an MQTT client without a username
			return r.clientID, schemas.IDMQTTClient
		}
	case idHeader:
		if len(r.headerVal) > 0 && !(len(r.headerVal) == 1 && r.headerVal[0] == '-') {
			return r.headerVal, schemas.IDToken
		}
	}
	if len(r.ipText) > 0 {
		return r.ipText, schemas.IDClientIP
	}
	return nil, schemas.IDUnknown
}

// GeneratedClientID reports whether an MQTT client id was generated at random
// for one connection rather than chosen for the device: Mosquitto assigns
// "auto-<UUID>" (auto_id_prefix) to clients that send none, as
// mosquitto_pub and mosquitto_sub do by default; libmosquitto generates
// "mosq-<16 letters and digits>" (mosquitto_ctrl, and clients that pass no
// id); MQTT.js "mqttjs_<8 hex digits>". Such an id is a new cold device on
// every connection, so identity "auto" and "username" never use it when the
// record has a username or a client address. It does not allocate.
func GeneratedClientID(id []byte) bool {
	tail := func(prefix string, min int, ok func(c byte) bool) bool {
		if len(id) < len(prefix)+min || string(id[:len(prefix)]) != prefix {
			return false
		}
		for _, c := range id[len(prefix):] {
			if !ok(c) {
				return false
			}
		}
		return true
	}
	hexDash := func(c byte) bool { return c == '-' || isHex(c) }
	alnum := func(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }
	return tail("auto-", 8, hexDash) || tail("mosq-", 10, alnum) || tail("mqttjs_", 8, isHex)
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f' }

// usernameMethod: an MQTT username is the client's login (mqtt_username,
// not its client id); over HTTP a user name is an authenticated principal.
func usernameMethod(p schemas.Protocol) schemas.IDMethod {
	if p == schemas.ProtoMQTT {
		return schemas.IDMQTTUsername
	}
	return schemas.IDToken
}

// hashKey returns the keyed hash of an API key (see KeyHasher), valid until
// the next call.
func (b *base) hashKey(key []byte) []byte {
	return appendKeyHash(b.keyHex[:0], b.macBuf[:0], b.mac, key)
}

// keyHashBytes is how much of the HMAC-SHA256 an API key hash keeps.
const keyHashBytes = 8

// appendKeyHash appends to dst the hex of the first keyHashBytes of
// HMAC(key), computed with mac (reset first) and scratch for the sum.
func appendKeyHash(dst, scratch []byte, mac hash.Hash, key []byte) []byte {
	mac.Reset()
	mac.Write(key)
	sum := mac.Sum(scratch)
	return hex.AppendEncode(dst, sum[:keyHashBytes])
}

// KeyHasher returns the hash that stands for API keys keyed by secret, as the
// decoders store it (16 hex digits of HMAC-SHA256), so that an enforcement
// point can match a key it sees in clear; nil without a secret. It is safe for
// concurrent use.
func KeyHasher(secret []byte) func(key string) string {
	if len(secret) == 0 {
		return nil
	}
	pool := sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
	return func(key string) string {
		mac := pool.Get().(hash.Hash)
		var scratch [sha256.Size]byte
		out := string(appendKeyHash(nil, scratch[:0], mac, []byte(key)))
		pool.Put(mac)
		return out
	}
}

// setIP parses an address (an optional ":port" or "[v6]:port" is dropped).
// A "-" or empty value leaves the IP unset; an unparseable one is an error.
func (b *base) setIP(text []byte) error {
	text = stripPort(text)
	if len(text) == 0 || (len(text) == 1 && text[0] == '-') {
		return nil
	}
	if len(text) > 64 {
		return b.fail(schemas.DeadLetterBadField, "the client address is not an IP address")
	}
	a, err := netip.ParseAddr(unsafe.String(&text[0], len(text)))
	if err != nil {
		return b.fail(schemas.DeadLetterBadField, "the client address is not an IP address")
	}
	b.rec.ip, b.rec.ipText = a.Unmap(), text
	return nil
}

// stripPort drops a port from "1.2.3.4:567" and "[::1]:567"; a bare IPv6
// address (several colons, no brackets) is returned as is.
func stripPort(b []byte) []byte {
	if len(b) > 0 && b[0] == '[' {
		if i := indexByte(b, ']'); i > 0 {
			return b[1:i]
		}
		return b
	}
	colons, last := 0, -1
	for i, c := range b {
		if c == ':' {
			colons++
			last = i
		}
	}
	if colons == 1 {
		return b[:last]
	}
	return b
}

func isAlpha(c byte) bool { c &^= 0x20; return c >= 'A' && c <= 'Z' }

// uaProduct returns the first product token of a User-Agent ("acme-lock/2.4.1").
func uaProduct(ua []byte) []byte {
	for i, c := range ua {
		if c == ' ' || c == '(' {
			return ua[:i]
		}
	}
	if len(ua) == 1 && ua[0] == '-' {
		return nil
	}
	return ua
}

// dash maps NGINX's and Envoy's "-" (no value) to nil.
func dash(b []byte) []byte {
	if len(b) == 1 && b[0] == '-' {
		return nil
	}
	return b
}

// atou parses a decimal unsigned integer; ok is false for anything else.
func atou(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// secondsToMicros parses "0.123" (seconds, as NGINX's $request_time) into µs;
// NGINX's "0.010, 0.020" (several upstreams) sums the parts. ok is false on junk.
func secondsToMicros(b []byte) (uint32, bool) {
	var total uint64
	for len(b) > 0 {
		for len(b) > 0 && (b[0] == ' ' || b[0] == ',' || b[0] == ':') {
			b = b[1:]
		}
		var sec, frac uint64
		scale := uint64(1e6)
		i := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 9 {
			sec = sec*10 + uint64(b[i]-'0')
			i++
		}
		if i == 0 {
			if len(b) > 0 && b[0] == '-' { // "-": no upstream
				b = b[1:]
				continue
			}
			return 0, false
		}
		if i < len(b) && b[i] == '.' {
			i++
			for i < len(b) && b[i] >= '0' && b[i] <= '9' {
				if scale > 1 {
					scale /= 10
					frac += uint64(b[i]-'0') * scale
				}
				i++
			}
		}
		total += sec*1e6 + frac
		b = b[i:]
		if len(b) > 0 && b[0] != ' ' && b[0] != ',' && b[0] != ':' {
			return 0, false
		}
	}
	if total > 1<<32-1 {
		total = 1<<32 - 1
	}
	return uint32(total), true
}

// indexByte is bytes.IndexByte for the short spans the text decoders scan,
// where a plain loop beats the call; Records uses bytes.IndexByte.
func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
