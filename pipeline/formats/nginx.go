package formats

import (
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// nginx decodes NGINX's default access-log format, "combined":
//
//	$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//
// The referer and user agent may be missing (the "common" format), and fields
// appended after them (a common "$http_x_forwarded_for" extension) are ignored.
// The format carries no device identity: the device is $remote_user when set
// (identity "username", method token), else the client IP. CountryField and
// header identities have nothing to match here; ClassField "user_agent_product" works.
// A syslog prefix (access_log syslog:server=... through a syslog daemon's
// file, see stripSyslog) is accepted in front. A line cut short (a status
// that is not three digits, nothing after the status, an unterminated
// quoted field) is dead-lettered, never read as a shorter event.
type nginx struct{ base }

func init() {
	register(schemas.FormatNginx, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		return &nginx{b}, err
	})
}

func (d *nginx) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.begin(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoHTTP
	p := line
	if len(p) > 0 && (p[0] < '0' || p[0] > '9') && p[0] != '[' && indexByte(p[:min(len(p), 40)], ':') > 4 {
		if msg, _, ok := stripSyslog(p, time.UTC, now); ok { // access_log syslog:... through a syslog daemon
			p = msg
		}
	}
	addr, p := field(p, ' ')
	if err := d.setIP(addr); err != nil || len(r.ipText) == 0 {
		return d.fail(schemas.DeadLetterMalformedLine, "the line does not start with a client address")
	}
	if !hasPrefix(p, "- ") {
		return d.fail(schemas.DeadLetterMalformedLine, "expected \"-\" after the client address")
	}
	p = p[2:]
	i := indexByte(p, '[')
	if i < 1 || p[i-1] != ' ' {
		return d.fail(schemas.DeadLetterMalformedLine, "expected [$time_local]")
	}
	r.username = dash(p[:i-1])
	p = p[i+1:]
	j := indexByte(p, ']')
	if j < 0 {
		return d.fail(schemas.DeadLetterMalformedLine, "unterminated [$time_local]")
	}
	t, ok := parseTimeLocal(p[:j])
	if !ok {
		return d.fail(schemas.DeadLetterBadTimestamp, "$time_local is not dd/Mon/yyyy:hh:mm:ss +zzzz")
	}
	r.time, r.haveTime = t, true
	p = p[j+1:]
	if !hasPrefix(p, ` "`) {
		return d.fail(schemas.DeadLetterMalformedLine, "expected \"$request\"")
	}
	req, p, ok := quoted(p[1:])
	if !ok {
		return d.fail(schemas.DeadLetterMalformedLine, "unterminated \"$request\"")
	}
	// "GET /path HTTP/1.1"; "-" or junk (a TLS handshake on a plain port) leaves no command.
	if m, rest := field(req, ' '); len(rest) > 0 {
		u, _ := field(rest, ' ')
		r.method, r.path = m, u
	}
	if len(p) == 0 || p[0] != ' ' {
		return d.fail(schemas.DeadLetterMalformedLine, "expected $status")
	}
	st, p := field(p[1:], ' ')
	n, ok := atou(st)
	if !ok || len(st) != 3 {
		return d.fail(schemas.DeadLetterBadField, "$status is not three digits")
	}
	r.status = uint16(n)
	if p == nil { // no space after the status: the line was cut
		return d.fail(schemas.DeadLetterMalformedLine, "the line ends after $status (truncated?)")
	}
	bs, p := field(p, ' ')
	if n, ok := atou(bs); ok {
		r.bytesOut = n
	} else if dash(bs) != nil {
		return d.fail(schemas.DeadLetterBadField, "$body_bytes_sent is not a number")
	}
	if hasPrefix(p, `"`) { // referer
		if _, p, ok = quoted(p); !ok {
			return d.fail(schemas.DeadLetterMalformedLine, "unterminated \"$http_referer\"")
		}
		if hasPrefix(p, ` "`) {
			var ua []byte
			if ua, _, ok = quoted(p[1:]); !ok {
				return d.fail(schemas.DeadLetterMalformedLine, "unterminated \"$http_user_agent\"")
			}
			r.ua = dash(ua)
		}
	}
	switch {
	case r.status == 401 || r.status == 403:
		r.auth = schemas.AuthFailed
	case len(r.username) > 0:
		r.auth = schemas.AuthOK
	default:
		r.auth = schemas.AuthNone
	}
	return d.finish(ev, seq, lineNo, now)
}

// field splits b at the first sep.
func field(b []byte, sep byte) (head, tail []byte) {
	if i := indexByte(b, sep); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// quoted reads a "..." value at the start of b (NGINX escapes '"' inside as
// \x22, and escape=json as \"), returning its contents and what follows.
func quoted(b []byte) (val, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, b, false
	}
	for i := 1; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return b[1:i], b[i+1:], true
		}
	}
	return nil, b, false
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

// parseTimeLocal parses NGINX's $time_local, "05/Jan/2026:10:00:00 +0100", into Unix ns.
func parseTimeLocal(b []byte) (int64, bool) {
	if len(b) != 26 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' || b[20] != ' ' {
		return 0, false
	}
	mon := 0
	for i, m := range months {
		if string(b[3:6]) == m {
			mon = i + 1
		}
	}
	if mon == 0 {
		return 0, false
	}
	// Reassemble as RFC 3339 on the stack and reuse the schemas parser.
	var buf [25]byte
	copy(buf[0:4], b[7:11])
	buf[4] = '-'
	buf[5], buf[6] = byte('0'+mon/10), byte('0'+mon%10)
	buf[7] = '-'
	copy(buf[8:10], b[0:2])
	buf[10] = 'T'
	copy(buf[11:19], b[12:20])
	buf[19] = b[21]
	copy(buf[20:22], b[22:24])
	buf[22] = ':'
	copy(buf[23:25], b[24:26])
	return schemas.ParseRFC3339(buf[:])
}
