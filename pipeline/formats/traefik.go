package formats

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// traefik decodes Traefik's JSON access log (v2 and v3, static configuration
// accessLog: {format: json}): one flat object per line, written by logrus
// with Traefik's field names (pkg/middlewares/accesslog/logdata.go) plus
// logrus's own "level", "msg" and "time", and one "request_<Header>",
// "origin_<Header>" or "downstream_<Header>" member per header the
// fields.headers configuration keeps (canonical header names, several values
// joined by ',', "REDACTED" for a redacted header). Used fields:
//
//	StartUTC, else StartLocal, else time   the request's start (RFC 3339)
//	ClientHost, else ClientAddr            client IP (the first address when ClientHost is an X-Forwarded-For list)
//	ClientUsername                         basicAuth/digestAuth user, or forwardAuth's headerField (identity "username", method token)
//	TLSClientSubject                       client certificate subject: its CN (identity "certificate")
//	RequestMethod, RequestPath             the command (RequestPath keeps the query unless fields.queryParameters drops it)
//	DownstreamStatus                       the status the client got
//	OriginStatus                           the service's status; 0 or absent when Traefik answered itself
//	RequestContentSize, DownstreamContentSize  bytes in and out
//	Duration                               latency (ns)
//	request_User-Agent                     user agent (ClassField user_agent_product)
//	request_X-Api-Key, request_Apikey      an API key in clear, hashed (identity "api_key")
//	downstream_X-Iotwatch-Action           the enforcer's action header on its deny
//
// Options.Identity "header:NAME", CountryField and ClassField match a kept
// request header by its name ("header:X-Device-Id" reads request_X-Device-Id)
// or any member by its whole name ("ServiceName"). A "REDACTED" header is
// absent. Identity "auto": the client certificate's CN (the whole subject
// without a CN; Traefik logs the subject of any certificate presented, so
// configure its TLS options to verify client certificates), then an API key
// header (with Options.KeySecret), then ClientUsername, then the client IP.
//
// The verdict of the forwardAuth enforcement point (deploy/traefik): a 403 or
// 429 carrying downstream_X-Iotwatch-Action (schemas.HeaderEnforceAction) is
// an enforced deny; a 500, 502, 503 or 504 without that header and without an
// OriginStatus (0 or absent: no service answered, so the middleware chain
// did; forwardAuth answers 500 when the enforcer cannot be reached and passes
// the enforcer's own 5xx on) is an enforcer outage. Neither is an
// authentication failure of the device. A request that reached the service
// has no verdict (VerdictNone): the log does not say that forwardAuth
// checked it.
//
// Traefik's default text formats (common, genericCLF) carry neither the
// headers nor OriginStatus: such a line is dead-lettered with a hint to
// switch the access log to JSON.
type traefik struct{ jsonBase }

func init() {
	register(schemas.FormatTraefik, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		return &traefik{jsonBase{base: b}}, err
	})
}

// Prefixes of Traefik's header members, and the value of a redacted header.
const (
	traefikRequestHeader  = "request_"
	traefikDownstreamHead = "downstream_"
	traefikRedacted       = "REDACTED"
)

// traefikCLFHint is the dead-letter detail of a line in Traefik's CLF format.
const traefikCLFHint = "a Traefik common log format (CLF) line, not JSON: set accessLog.format to json (deploy/traefik/README.md)"

func (d *traefik) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if firstNonSpace(line) != '{' && looksCLF(line) {
		if err := d.begin(line, ev); err != nil {
			return err
		}
		return d.fail(schemas.DeadLetterMalformedLine, traefikCLFHint)
	}
	if err := d.parse(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	var startUTC, startLocal, logTime *token
	var clientHost, clientAddr, subject, action []byte
	var origin uint64
	for i := range d.f.toks {
		t := &d.f.toks[i]
		var err error
		switch string(t.path) {
		case "StartUTC":
			startUTC = t
		case "StartLocal":
			startLocal = t
		case "time":
			logTime = t
		case "ClientHost":
			clientHost = str(t)
		case "ClientAddr":
			clientAddr = str(t)
		case "ClientUsername":
			r.username = str(t)
		case "TLSClientSubject":
			subject = str(t)
		case "RequestMethod":
			r.method = str(t)
		case "RequestPath":
			r.path = str(t)
		case "DownstreamStatus":
			err = d.status(t, 999, "DownstreamStatus")
		case "OriginStatus":
			origin, err = d.unum(t, 999, "OriginStatus")
		case "RequestContentSize":
			r.bytesIn, err = d.unum(t, 1<<53, "RequestContentSize")
		case "DownstreamContentSize":
			r.bytesOut, err = d.unum(t, 1<<53, "DownstreamContentSize")
		case "Duration":
			var ns uint64
			ns, err = d.unum(t, 1<<62, "Duration")
			r.latency = uint32(min(ns/1000, 1<<32-1))
		default:
			switch {
			case hasPrefix(t.path, traefikRequestHeader):
				name, val := t.path[len(traefikRequestHeader):], str(t)
				if string(val) == traefikRedacted {
					val = nil
				}
				switch {
				case eqName(name, "user_agent"):
					r.ua = val
				case eqName(name, "x_api_key"), eqName(name, "apikey"):
					r.apiKeyRaw = val
				}
				if val != nil {
					d.configured(name, val)
				}
			case hasPrefix(t.path, traefikDownstreamHead) && eqName(t.path[len(traefikDownstreamHead):], normHeaderAction):
				if a := str(t); string(a) != traefikRedacted {
					action = a
				}
			case t.kind != kNull:
				d.configured(t.path, t.val) // a member by its whole name ("ServiceName")
			}
		}
		if err != nil {
			return err
		}
	}
	if err := d.startTime(startUTC, startLocal, logTime); err != nil {
		return err
	}
	if len(clientHost) > 0 {
		first, _ := field(clientHost, ',') // X-Forwarded-For from a trusted proxy: the client first
		clientHost = trimSpace(first)
	}
	if len(clientHost) == 0 {
		clientHost = clientAddr
	}
	if err := d.setIP(clientHost); err != nil {
		return err
	}
	if len(subject) > 0 {
		if r.cert = commonName(subject); len(r.cert) == 0 {
			r.cert = subject
		}
	}
	r.auth = httpAuth(r.status, len(r.cert) > 0 || len(r.username) > 0, false)
	return d.finishVerdict(ev, seq, lineNo, now, traefikVerdict(r.status, origin, action))
}

// normHeaderAction is schemas.HeaderEnforceAction as normName writes it.
var normHeaderAction = normName(schemas.HeaderEnforceAction)

// traefikVerdict reads the forwardAuth verdict from the status the client
// got, the service's status (0: no service answered) and the enforcer's
// action header.
func traefikVerdict(status uint16, origin uint64, action []byte) schemas.Verdict {
	switch {
	case len(action) > 0 && (status == 403 || status == 429):
		return schemas.VerdictDenied
	case len(action) == 0 && origin == 0 && (status == 500 || status == 502 || status == 503 || status == 504):
		return schemas.VerdictUnavailable
	}
	return schemas.VerdictNone
}

// startTime sets the record's time from the first of StartUTC, StartLocal
// and logrus's time that is present; a present one that is not an RFC 3339
// string is a bad timestamp. None leaves the time unset (finish rejects it).
func (d *traefik) startTime(ts ...*token) error {
	for i, t := range ts {
		if t == nil || t.kind == kNull {
			continue
		}
		ns, ok := schemas.ParseRFC3339(t.val)
		if t.kind != kString || !ok {
			return d.fail(schemas.DeadLetterBadTimestamp, [...]string{"StartUTC", "StartLocal", "time"}[i]+" is not an RFC 3339 time")
		}
		d.rec.time, d.rec.haveTime = ns, true
		return nil
	}
	return nil
}

// looksCLF reports whether line has the shape of Traefik's common and
// genericCLF formats: `HOST - USER [dd/Mon/yyyy:hh:mm:ss +zzzz] "REQUEST" ...`.
func looksCLF(line []byte) bool {
	host, rest := field(line, ' ')
	if len(host) == 0 || !hasPrefix(rest, "- ") {
		return false
	}
	i := indexByte(rest, '[')
	if i < 0 || i+28 > len(rest) || rest[i+27] != ']' {
		return false
	}
	_, ok := parseTimeLocal(rest[i+1 : i+27])
	return ok
}

// trimSpace drops leading and trailing spaces and tabs.
func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
