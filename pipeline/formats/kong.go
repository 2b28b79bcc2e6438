package formats

import (
	"math/bits"
	"strconv"
	"strings"

	"github.com/iotwatch/iotwatch/schemas"
)

// jsonBase is the part shared by the JSON formats: the base plus a flattener.
type jsonBase struct {
	base
	f    flattener
	want *fieldNode // the members parse flattens; nil for all
}

// parse resets ev, checks the line and flattens it.
func (d *jsonBase) parse(line []byte, ev *schemas.Event) error {
	if err := d.begin(line, ev); err != nil {
		return err
	}
	return d.syntax(d.f.parse(line, d.want))
}

// syntax maps a flattener error to the decode failure; nil stays nil.
func (d *jsonBase) syntax(err error) error {
	switch {
	case err == nil:
		return nil
	case err == errNotObject:
		return d.fail(schemas.DeadLetterNotObject, err.Error())
	}
	return d.fail(schemas.DeadLetterMalformedJSON, err.Error())
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
		return 0, d.fail(schemas.DeadLetterBadField, what+" is not a number in range")
	}
	return uint64(n), nil
}

// status reads an HTTP status code of at most max into the record.
func (d *base) status(t *token, max float64, what string) error {
	n, err := d.unum(t, max, what)
	d.rec.status = uint16(n)
	return err
}

// latencyMs reads a duration in whole milliseconds into the record's latency
// (microseconds, bounded by its uint32).
func (d *base) latencyMs(t *token, what string) error {
	n, err := d.unum(t, 1<<32/1000-1, what)
	d.rec.latency = uint32(n * 1000)
	return err
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
//
// A Kong record is mostly what the decoder does not read (the service and
// route objects, every request and response header), so only the members on
// the path to a used field or to a configured one (Options.Identity
// header:<name>, CountryField, ClassField) are flattened; the rest is skipped
// with its brackets and strings checked but not converted.
type kong struct{ jsonBase }

// kongFields are the normalized paths of the fields the decoder reads.
var kongFields = [...]string{
	"started_at", "client_ip", "request.method", "request.uri", "request.size",
	"request.headers.user_agent", "request.headers.apikey", "request.headers.x_api_key",
	"request.tls.client_verify", "response.status", "response.size", "latencies.request",
	"consumer.username", "consumer.id", "authenticated_entity.id",
}

func init() {
	register(schemas.FormatKong, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceGateway)
		want := kongFields[:]
		for _, name := range [...]string{b.configuredHeader(), b.country, b.class} {
			if name != "" { // everywhere matchField finds it
				want = append(want, name, "request.headers."+name, "http_"+name)
			}
		}
		var tree fieldNode
		for _, p := range want {
			tree.add(p)
		}
		return &kong{jsonBase{base: b, want: &tree}}, err
	})
}

// configuredHeader is the normalized header:<name> identity, if configured.
func (b *base) configuredHeader() string {
	if b.mode == idHeader {
		return b.header
	}
	return ""
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
				return d.fail(schemas.DeadLetterBadTimestamp, "started_at is not Unix milliseconds")
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
			err = d.status(t, 65535, "response.status")
		case "response.size":
			r.bytesOut, err = d.unum(t, 1<<53, "response.size")
		case "latencies.request":
			err = d.latencyMs(t, "latencies.request")
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

// fieldNode is a tree of normalized member paths (see normName): the
// members of one object that are wanted or lead to wanted ones. Gateways
// write few of them per object, so a linear search beats hashing. A key
// holding a '.' never matches (the flattener's path would not tell it from
// two levels).
type fieldNode struct {
	name     string
	leaf     bool // the member itself is wanted
	children []fieldNode
}

// add adds the dotted path below n.
func (n *fieldNode) add(path string) {
	name, rest, nested := strings.Cut(path, ".")
	var c *fieldNode
	for i := range n.children {
		if n.children[i].name == name {
			c = &n.children[i]
		}
	}
	if c == nil {
		n.children = append(n.children, fieldNode{name: name})
		c = &n.children[len(n.children)-1]
	}
	if nested {
		c.add(rest)
	} else {
		c.leaf = true
	}
}

// child returns the member named key (any case, '-' for '_'), or nil.
func (n *fieldNode) child(key []byte) *fieldNode {
	if len(key) == 0 {
		return nil
	}
	k0 := key[0] // a cheap first test before eqName
	if k0 >= 'A' && k0 <= 'Z' {
		k0 += 'a' - 'A'
	} else if k0 == '-' {
		k0 = '_'
	}
	for i := range n.children {
		c := &n.children[i]
		if len(c.name) == len(key) && c.name[0] == k0 && eqName(key, c.name) {
			return c
		}
	}
	return nil
}

// skipValue skips the value at f.i: a string, a balanced object or array
// (brackets and strings checked), a literal, or a number (its characters
// checked, not converted).
func (f *flattener) skipValue() error {
	switch c := f.b[f.i]; {
	case c == '"':
		return f.skipString()
	case c == '{' || c == '[':
		return f.skipBalanced()
	case c == 't':
		return f.skipWord("true")
	case c == 'f':
		return f.skipWord("false")
	case c == 'n':
		return f.skipWord("null")
	case c == '-' || (c >= '0' && c <= '9'):
		for f.i < len(f.b) && isNumberByte(f.b[f.i]) {
			f.i++
		}
		return nil
	}
	return syntaxError("unexpected character at offset " + strconv.Itoa(f.i))
}

func (f *flattener) skipWord(word string) error {
	if len(f.b)-f.i < len(word) || string(f.b[f.i:f.i+len(word)]) != word {
		return syntaxError("invalid literal at offset " + strconv.Itoa(f.i))
	}
	f.i += len(word)
	return nil
}

// skipString skips the string at f.i (its opening quote) without decoding
// it: quoteOrBackslash finds each quote or backslash; a backslash escapes
// the byte after it, the first unescaped quote ends the string.
func (f *flattener) skipString() error {
	i := f.i + 1
	if m := firstLanes(f.b, i); m != 0 {
		i += bits.TrailingZeros64(m) >> 3
	} else {
		i = quoteOrBackslash(f.b, i)
	}
	for {
		switch {
		case i == len(f.b):
			return syntaxError("unterminated string")
		case f.b[i] == '"':
			f.i = i + 1
			return nil
		}
		i += 2 // the backslash and the byte it escapes
		if i > len(f.b) {
			return syntaxError("unterminated string")
		}
		i = quoteOrBackslash(f.b, i)
	}
}
