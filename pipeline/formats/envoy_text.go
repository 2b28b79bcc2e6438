package formats

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// Envoy's default access-log format, what Envoy writes when an access log
// has no format configured (Envoy docs, "Access logging", default format string):
//
//	[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
//	%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
//	"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
//
// and Istio's default text format (meshConfig.accessLogFile without an
// accessLogFormat), which adds %RESPONSE_CODE_DETAILS%
// %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
// after the flags and %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS%
// %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% ... at the end.
// The client IP is the downstream remote address when logged (Istio), else
// the first X-Forwarded-For entry; the format carries no device identity,
// so the device is the client IP. Format "envoy" reads a line starting with
// '[' this way and a line starting with '{' as JSON.
func (d *envoy) decodeText(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.begin(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	p := line
	j := indexByte(p, ']')
	if len(p) == 0 || p[0] != '[' || j < 0 {
		return d.fail(schemas.DeadLetterMalformedLine, "expected [%START_TIME%]")
	}
	t, ok := schemas.ParseRFC3339(p[1:j])
	if !ok {
		return d.fail(schemas.DeadLetterBadTimestamp, "%START_TIME% is not an RFC 3339 time")
	}
	r.time, r.haveTime = t, true
	p = p[j+1:]
	if !hasPrefix(p, ` "`) {
		return d.fail(schemas.DeadLetterMalformedLine, "expected \"METHOD PATH PROTOCOL\"")
	}
	req, p, ok := quoted(p[1:])
	if !ok {
		return d.fail(schemas.DeadLetterMalformedLine, "unterminated \"METHOD PATH PROTOCOL\"")
	}
	if m, rest := field(req, ' '); len(rest) > 0 && string(m) != "-" {
		u, _ := field(rest, ' ')
		r.method, r.path = m, u
	}
	// Tokens and quoted fields after the request, in order.
	var toks [24][]byte
	n := 0
	for len(p) > 0 && n < len(toks) {
		if p[0] != ' ' {
			return d.fail(schemas.DeadLetterMalformedLine, "expected a space between fields")
		}
		p = p[1:]
		if len(p) > 0 && p[0] == '"' {
			v, rest, ok := quoted(p)
			if !ok {
				return d.fail(schemas.DeadLetterMalformedLine, "unterminated quoted field")
			}
			toks[n], p = v, rest
		} else {
			k := indexByte(p, ' ')
			if k < 0 {
				k = len(p)
			}
			toks[n], p = p[:k], p[k:]
		}
		n++
	}
	if n < 9 {
		return d.fail(schemas.DeadLetterMalformedLine, "fewer fields than Envoy's default format (truncated?)")
	}
	code, ok := atou(toks[0])
	if !ok || len(toks[0]) != 3 {
		if string(toks[0]) != "0" { // 0: no response (a downstream reset)
			return d.fail(schemas.DeadLetterBadField, "%RESPONSE_CODE% is not a status")
		}
	}
	r.status = uint16(code)
	flags := toks[1]
	i := 2
	istio := false
	if _, isNum := atou(toks[2]); !isNum {
		istio, i = true, 5 // %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"
	}
	if n < i+9 {
		return d.fail(schemas.DeadLetterMalformedLine, "fewer fields than Envoy's default format (truncated?)")
	}
	var okIn, okOut, okDur bool
	r.bytesIn, okIn = atou(toks[i])
	r.bytesOut, okOut = atou(toks[i+1])
	dur, okDur := atou(toks[i+2])
	if !okIn || !okOut || !(okDur || string(toks[i+2]) == "-") {
		return d.fail(schemas.DeadLetterBadField, "%BYTES_RECEIVED%, %BYTES_SENT% or %DURATION% is not a number")
	}
	r.latency = uint32(min(dur*1000, 1<<32-1))
	xff, ua := dash(toks[i+4]), dash(toks[i+5])
	r.ua = ua
	var client []byte
	if istio && n >= i+13 {
		client = dash(toks[i+12]) // %DOWNSTREAM_REMOTE_ADDRESS%
	}
	if len(client) == 0 && len(xff) > 0 {
		client, _ = field(xff, ',')
	}
	if err := d.setIP(client); err != nil {
		return err
	}
	r.auth = httpAuth(r.status, false, containsFlag(flags, "UAEX"))
	return d.finish(ev, seq, lineNo, now)
}
