package formats

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// jsonBase is the part shared by the JSON formats: the base plus a flattener.
type jsonBase struct {
	base
	f flattener
}

// parse resets ev, checks the line and flattens it.
func (d *jsonBase) parse(line []byte, ev *schemas.Event) error {
	if err := d.begin(line, ev); err != nil {
		return err
	}
	if err := d.f.parse(line); err != nil {
		if err == errNotObject {
			return d.fail(schemas.ErrReasonNotObject, err.Error())
		}
		return d.fail(schemas.ErrReasonMalformed, err.Error())
	}
	return nil
}

// str returns a string token's value ("-" and null as nil).
func str(t *token) []byte {
	if t.kind == kString {
		return dash(t.val)
	}
	return nil
}

// num returns a number token's value, also from a numeric string; ok is false
// for anything else ("-" and null are absent: ok true, present false).
func num(t *token) (n float64, present, ok bool) {
	switch t.kind {
	case kNumber:
		return t.num, true, t.num >= 0
	case kNull:
		return 0, false, true
	case kString:
		v := dash(t.val)
		if len(v) == 0 {
			return 0, false, true
		}
		u, ok := atou(v)
		return float64(u), ok, ok
	}
	return 0, false, false
}

// unum is num for unsigned integer fields bounded by max; bad values fail.
func (d *base) unum(t *token, max float64, what string) (uint64, error) {
	n, _, ok := num(t)
	if !ok || n > max {
		return 0, d.fail(schemas.ErrReasonBadField, what+" is not a number in range")
	}
	return uint64(n), nil
}

// kong decodes the JSON that Kong's http-log plugin posts (also file-log and
// tcp-log, which share the serializer): one object per record.
//
// Used fields: started_at (ms), client_ip, request.method, request.uri,
// request.size, request.headers.user-agent, request.headers.apikey /
// x-api-key (hashed), request.tls.client_verify, response.status,
// response.size, latencies.request (ms), consumer.username / consumer.id
// (identity "token": the consumer Kong authenticated), consumer.custom_id
// (a good ClassField), authenticated_entity.id (the credential id, kept as
// the event's API key id). Auth is ok when a consumer is set, failed on 401
// and 403 without one, none otherwise.
type kong struct{ jsonBase }

func init() {
	register(schemas.FormatKong, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		return &kong{jsonBase{base: b}}, err
	})
}

func (d *kong) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.parse(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	var consumerID, clientVerify []byte
	for i := range d.f.toks {
		t := &d.f.toks[i]
		d.configured(t.path, t.val)
		var err error
		switch string(t.path) {
		case "started_at":
			n, present, ok := num(t)
			if !ok || !present || n > 1e14 {
				return d.fail(schemas.ErrReasonBadTime, "started_at is not Unix milliseconds")
			}
			r.time, r.haveTime = int64(n)*1e6, true
		case "client_ip":
			err = d.setIP(str(t))
		case "request.method":
			r.method = str(t)
		case "request.uri":
			r.path = str(t)
		case "request.size":
			r.bytesIn, err = d.unum(t, 1<<53, "request.size")
		case "request.headers.user-agent":
			r.ua = str(t)
		case "request.headers.apikey", "request.headers.x-api-key":
			r.apiKeyRaw = str(t)
		case "request.tls.client_verify":
			clientVerify = str(t)
		case "response.status":
			var n uint64
			n, err = d.unum(t, 65535, "response.status")
			r.status = uint16(n)
		case "response.size":
			r.bytesOut, err = d.unum(t, 1<<53, "response.size")
		case "latencies.request":
			var n uint64
			n, err = d.unum(t, 1<<32/1000-1, "latencies.request")
			r.latency = uint32(n * 1000)
		case "consumer.username":
			r.token = str(t)
		case "consumer.id":
			consumerID = str(t)
		case "authenticated_entity.id":
			r.apiKeyID = str(t)
		}
		if err != nil {
			return err
		}
	}
	if len(r.token) == 0 {
		r.token = consumerID
	}
	switch {
	case len(r.token) > 0:
		r.auth = schemas.AuthOK
	case r.status == 401 || r.status == 403 || hasPrefix(clientVerify, "FAILED"):
		r.auth = schemas.AuthFailed
	default:
		r.auth = schemas.AuthNone
	}
	return d.finish(ev, seq, lineNo, now)
}

func hasPrefix(b []byte, p string) bool { return len(b) >= len(p) && string(b[:len(p)]) == p }
