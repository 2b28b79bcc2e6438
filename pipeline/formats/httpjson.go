package formats

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// nginxJSON decodes NGINX access logs written with the iotwatch JSON
// log_format shipped in deploy/nginx (escape=json; every value a string, an
// unset variable "" or "-"). Unknown fields are ignored, so the format may be
// extended. Identity "auto": a verified client certificate (CN of
// ssl_client_s_dn, else ssl_client_fingerprint), then $remote_user, then an
// API key header if logged (http_x_api_key or http_apikey, hashed), then the
// client IP. The enforcement point's verdict (Event.Verdict) comes from
// iotwatch_action and iotwatch_auth_status (see authVerdict); an iotwatch
// deny is not an authentication failure.
type nginxJSON struct{ jsonBase }

// envoy decodes Envoy JSON access logs with the json_format shipped in
// deploy/envoy (its keys are the lower-cased names of Envoy's default text
// format fields). Envoy renders numbers as numbers and an unavailable value as
// null. Identity "auto": the downstream peer certificate (CN of
// downstream_peer_subject, else downstream_peer_uri_san, else
// downstream_peer_fingerprint_256), then the client IP. A line starting with
// '[' is Envoy's default text format (see decodeText). The verdict of an
// ext_authz enforcement point comes from response_code_details
// (ext_authz_denied, ext_authz_error) and iotwatch_action.
type envoy struct{ jsonBase }

func init() {
	register(schemas.FormatNginxJSON, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		return &nginxJSON{jsonBase{base: b}}, err
	})
	register(schemas.FormatEnvoy, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		return &envoy{jsonBase{base: b}}, err
	})
}

func (d *nginxJSON) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.parse(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	var verify, dn, fp, iso, action, authStatus []byte
	haveMsec := false
	for i := range d.f.toks {
		t := &d.f.toks[i]
		d.configured(t.path, t.val)
		var err error
		switch string(t.path) {
		case "msec":
			v := t.val
			if t.kind == kString || t.kind == kNumber {
				if ns, ok := parseSecondsNs(v); ok {
					r.time, r.haveTime, haveMsec = ns, true, true
					continue
				}
			}
			return d.fail(schemas.DeadLetterBadTimestamp, "msec is not Unix seconds")
		case "time", "time_iso8601":
			iso = str(t)
		case "remote_addr":
			err = d.setIP(str(t))
		case "remote_user":
			r.username = str(t)
		case "request_method":
			r.method = str(t)
		case "request_uri":
			r.path = str(t)
		case "status":
			err = d.status(t, 999, "status")
		case "request_length":
			r.bytesIn, err = d.unum(t, 1<<53, "request_length")
		case "bytes_sent":
			r.bytesOut, err = d.unum(t, 1<<53, "bytes_sent")
		case "request_time":
			if v := str(t); len(v) > 0 {
				var ok bool
				if r.latency, ok = secondsToMicros(v); !ok {
					return d.fail(schemas.DeadLetterBadField, "request_time is not seconds")
				}
			}
		case "http_user_agent":
			r.ua = str(t)
		case "http_x_api_key", "http_apikey":
			r.apiKeyRaw = str(t)
		case "ssl_client_verify":
			verify = str(t)
		case "ssl_client_s_dn":
			dn = str(t)
		case "ssl_client_fingerprint":
			fp = str(t)
		case "iotwatch_action":
			action = dash(str(t))
		case "iotwatch_auth_status":
			authStatus = dash(str(t))
		}
		if err != nil {
			return err
		}
	}
	if !haveMsec && len(iso) > 0 {
		t, ok := schemas.ParseRFC3339(iso)
		if !ok {
			return d.fail(schemas.DeadLetterBadTimestamp, "time is not an RFC 3339 time")
		}
		r.time, r.haveTime = t, true
	}
	if string(verify) == "SUCCESS" {
		if r.cert = commonName(dn); len(r.cert) == 0 {
			r.cert = fp
		}
	}
	r.auth = httpAuth(r.status, len(r.cert) > 0 || len(r.username) > 0, hasPrefix(verify, "FAILED"))
	v := authVerdict(r.status, action, authStatus)
	if v == schemas.VerdictDenied && r.auth == schemas.AuthFailed && !hasPrefix(verify, "FAILED") {
		r.auth = schemas.AuthNone // the enforcer's 403 is not the device failing to authenticate
	}
	if err := d.finish(ev, seq, lineNo, now); err != nil {
		return err
	}
	ev.Verdict = v
	return nil
}

// authVerdict reads an NGINX auth_request verdict: action is the enforcer's
// X-Iotwatch-Action, authStatus the auth subrequest's $upstream_status
// ("502, 504" when several servers were tried: the last one counts).
func authVerdict(status uint16, action, authStatus []byte) schemas.Verdict {
	if len(authStatus) == 0 {
		if len(action) > 0 && (status == 403 || status == 429) {
			return schemas.VerdictDenied
		}
		return schemas.VerdictNone
	}
	if i := lastIndexOf(authStatus, " "); i >= 0 {
		authStatus = authStatus[i+1:]
	}
	n, _ := atou(authStatus)
	switch {
	case n >= 200 && n < 300:
		return schemas.VerdictAllowed
	case n == 401 || n == 403 || n == 429:
		return schemas.VerdictDenied
	}
	return schemas.VerdictUnavailable // 5xx, or anything NGINX answers 500 for
}

func (d *envoy) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if firstNonSpace(line) == '[' {
		return d.decodeText(line, seq, lineNo, now, ev)
	}
	if err := d.parse(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	var subject, san, fp, flags, details, action []byte
	for i := range d.f.toks {
		t := &d.f.toks[i]
		d.configured(t.path, t.val)
		var err error
		switch string(t.path) {
		case "start_time":
			ts, ok := schemas.ParseRFC3339(t.val)
			if t.kind != kString || !ok {
				return d.fail(schemas.DeadLetterBadTimestamp, "start_time is not an RFC 3339 time")
			}
			r.time, r.haveTime = ts, true
		case "downstream_remote_address", "downstream_remote_address_without_port":
			err = d.setIP(str(t))
		case "method":
			r.method = str(t)
		case "path":
			r.path = str(t)
		case "response_code":
			err = d.status(t, 999, "response_code")
		case "response_flags":
			flags = str(t)
		case "bytes_received":
			r.bytesIn, err = d.unum(t, 1<<53, "bytes_received")
		case "bytes_sent":
			r.bytesOut, err = d.unum(t, 1<<53, "bytes_sent")
		case "duration":
			err = d.latencyMs(t, "duration")
		case "user_agent":
			r.ua = str(t)
		case "x_api_key", "apikey":
			r.apiKeyRaw = str(t)
		case "downstream_peer_subject":
			subject = str(t)
		case "downstream_peer_uri_san":
			san = str(t)
		case "downstream_peer_fingerprint_256":
			fp = str(t)
		case "response_code_details":
			details = str(t)
		case "iotwatch_action":
			action = dash(str(t))
		}
		if err != nil {
			return err
		}
	}
	switch {
	case len(subject) > 0 && len(commonName(subject)) > 0:
		r.cert = commonName(subject)
	case len(san) > 0:
		r.cert = san
	default:
		r.cert = fp
	}
	// UAEX: an external authorization service denied the request (or failed).
	r.auth = httpAuth(r.status, len(r.cert) > 0, containsFlag(flags, "UAEX"))
	var v schemas.Verdict
	switch {
	case string(details) == "ext_authz_error":
		v = schemas.VerdictUnavailable
	case string(details) == "ext_authz_denied", len(action) > 0 && (r.status == 403 || r.status == 429):
		v = schemas.VerdictDenied
	}
	return d.finishVerdict(ev, seq, lineNo, now, v)
}

// httpAuth derives the auth outcome of an HTTP request.
func httpAuth(status uint16, authenticated, denied bool) schemas.AuthOutcome {
	switch {
	case denied || status == 401 || status == 403:
		return schemas.AuthFailed
	case authenticated:
		return schemas.AuthOK
	}
	return schemas.AuthNone
}

func containsFlag(flags []byte, f string) bool {
	for len(flags) > 0 {
		var one []byte
		one, flags = field(flags, ',')
		if string(one) == f {
			return true
		}
	}
	return false
}

// commonName returns the CN of a distinguished name in RFC 2253 form
// ("CN=dev-17,O=Acme") or OpenSSL's legacy form ("/O=Acme/CN=dev-17").
func commonName(dn []byte) []byte {
	for i := 0; i+3 <= len(dn); i++ {
		if (i == 0 || dn[i-1] == ',' || dn[i-1] == '/') && (dn[i]|0x20) == 'c' && (dn[i+1]|0x20) == 'n' && dn[i+2] == '=' {
			v := dn[i+3:]
			for j, c := range v {
				if c == '/' || (c == ',' && (j == 0 || v[j-1] != '\\')) {
					return v[:j]
				}
			}
			return v
		}
	}
	return nil
}

// parseSecondsNs parses "1767607200.250" (Unix seconds with a fraction) into ns.
func parseSecondsNs(b []byte) (int64, bool) {
	var sec, frac int64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' && i < 12 {
		sec = sec*10 + int64(b[i]-'0')
		i++
	}
	if i == 0 {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		scale := int64(1e8)
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			frac += int64(b[i]-'0') * scale
			scale /= 10
			i++
		}
	}
	if i != len(b) {
		return 0, false
	}
	return sec*1e9 + frac, true
}
