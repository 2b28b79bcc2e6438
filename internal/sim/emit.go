package sim

import (
	"strconv"
	"time"
)

// rec is one access-log record before encoding. Strings are never escaped:
// every value the simulator produces is plain ASCII without quotes.
type rec struct {
	t      int64
	mqtt   bool
	srcID  string
	tenant string
	device string
	idBy   string
	apiKey string
	class  string
	fw     string
	id     *ident
	method string
	// path or topic is pre + pathID + post + query
	pre     string
	pathID  string
	pathIDb []byte // used instead of pathID when set
	post    string
	query   []byte // "?name=value" after the path, or empty
	status  uint16
	auth    string
	in      int64
	out     int64
	latUs   int64
}

func (r *rec) reset(d *device, t int64, id *ident, c *cmdSpec) {
	*r = rec{
		t: t, mqtt: d.cls.mqtt, srcID: d.srcID, tenant: d.tenant, device: d.id, idBy: d.cls.idBy,
		apiKey: d.apiKey, class: d.cls.class, fw: d.fw, id: id,
		method: c.method, pre: c.pre, post: c.post, auth: "ok",
	}
	if c.pre != "" {
		r.pathID = d.id
	}
}

// setArg gives r the query string ?name=v (v in tenths, written with one
// decimal, as gateways log numeric query parameters), in s's buffer.
func (s *Sim) setArg(r *rec, name string, tenths int) {
	b := append(s.query[:0], '?')
	b = append(b, name...)
	b = append(b, '=')
	if tenths < 0 {
		b = append(b, '-')
		tenths = -tenths
	}
	b = strconv.AppendInt(b, int64(tenths/10), 10)
	s.query = append(b, '.', byte('0'+tenths%10))
	r.query = s.query
}

// appendRec appends r as a canonical JSON line.
func (s *Sim) appendRec(dst []byte, r *rec) []byte {
	dst = append(dst, `{"ts":"`...)
	dst = s.appendTime(dst, r.t)
	if r.mqtt {
		dst = append(dst, `","src":"broker","src_id":"`...)
	} else {
		dst = append(dst, `","src":"gateway","src_id":"`...)
	}
	dst = append(dst, r.srcID...)
	dst = append(dst, `","tenant":"`...)
	dst = append(dst, r.tenant...)
	dst = append(dst, `","device":"`...)
	dst = append(dst, r.device...)
	dst = append(dst, `","id_by":"`...)
	dst = append(dst, r.idBy...)
	if r.apiKey != "" {
		dst = append(dst, `","api_key":"`...)
		dst = append(dst, r.apiKey...)
	}
	dst = append(dst, `","class":"`...)
	dst = append(dst, r.class...)
	dst = append(dst, `","fw":"`...)
	dst = append(dst, r.fw...)
	dst = append(dst, `","ip":"`...)
	dst = append(dst, r.id.ip...)
	if r.id.country != "" { // the field model's gateways without GeoIP log neither
		dst = append(dst, `","country":"`...)
		dst = append(dst, r.id.country...)
		dst = append(dst, `","asn":`...)
		dst = strconv.AppendUint(dst, uint64(r.id.asn), 10)
	} else {
		dst = append(dst, '"')
	}
	if r.mqtt {
		dst = append(dst, `,"proto":"mqtt","op":"`...)
		dst = append(dst, r.method...)
		if r.pre != "" || r.post != "" {
			dst = append(dst, `","topic":"`...)
		}
	} else {
		dst = append(dst, `,"proto":"http","method":"`...)
		dst = append(dst, r.method...)
		dst = append(dst, `","path":"`...)
	}
	dst = append(dst, r.pre...)
	dst = append(dst, r.pathID...)
	dst = append(dst, r.pathIDb...)
	dst = append(dst, r.post...)
	dst = append(dst, r.query...)
	dst = append(dst, `","status":`...)
	dst = strconv.AppendUint(dst, uint64(r.status), 10)
	dst = append(dst, `,"auth":"`...)
	dst = append(dst, r.auth...)
	dst = append(dst, `","bytes_in":`...)
	dst = strconv.AppendInt(dst, r.in, 10)
	dst = append(dst, `,"bytes_out":`...)
	dst = strconv.AppendInt(dst, r.out, 10)
	dst = append(dst, `,"latency_ms":`...)
	// Milliseconds with one decimal.
	tenths := r.latUs / 100
	dst = strconv.AppendInt(dst, tenths/10, 10)
	dst = append(dst, '.', byte('0'+tenths%10), '}')
	return dst
}

// appendTime appends t (Unix ns, UTC) as RFC 3339 with milliseconds.
func (s *Sim) appendTime(dst []byte, t int64) []byte {
	day := t / dayNs
	if t < 0 {
		day-- // not reached: Validate keeps times after 2000
	}
	if day != s.tsDay {
		s.tsDay = day
		s.tsPrefix = time.Unix(day*86400, 0).UTC().AppendFormat(s.tsPrefix[:0], "2006-01-02T")
	}
	dst = append(dst, s.tsPrefix...)
	rem := t - day*dayNs
	ms := rem / msNs
	h, m, sec, milli := ms/3_600_000, ms/60_000%60, ms/1000%60, ms%1000
	return append(dst,
		byte('0'+h/10), byte('0'+h%10), ':',
		byte('0'+m/10), byte('0'+m%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), '.',
		byte('0'+milli/100), byte('0'+milli/10%10), byte('0'+milli%10), 'Z')
}

// appendPad6 appends n with at least six digits.
func appendPad6(dst []byte, n int) []byte {
	var b [20]byte
	i := len(b)
	for n > 0 || i > len(b)-6 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return append(dst, b[i:]...)
}
