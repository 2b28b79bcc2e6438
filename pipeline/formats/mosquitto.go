package formats

import (
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// mosquitto decodes Mosquitto broker log lines (log_type all, log_timestamp
// true: "1767607200: message"; log_timestamp_format "%Y-%m-%dT%H:%M:%S" is
// read as UTC). Events:
//
//	New client connected from 203.0.113.5:51234 as dev-17 (p2, c1, k60, u'dev17').  CONNECT, auth ok
//	Client dev-17 disconnected, not authorised.                                        CONNECT, auth failed, status 5
//	Client dev-17 disconnected.  (also: closed its connection / exceeded timeout / socket error)  DISCONNECT
//	Received PUBLISH from dev-17 (d0, q1, r0, m3, 'devices/dev-17/cmd/unlock', ... (12 bytes))  PUBLISH topic, bytes in
//	Denied PUBLISH from dev-17 (d0, q0, r0, m0, 'topic', ... (5 bytes))               PUBLISH, auth failed, status 135
//	Received SUBSCRIBE from dev-17 / <tab>topic (QoS 1)                               SUBSCRIBE topic, one per topic line
//	Received UNSUBSCRIBE from dev-17 / <tab>topic                                     UNSUBSCRIBE topic
//
// Every other line (keep-alives, acknowledgements, deliveries to subscribers,
// start-up messages) returns ErrSkip.
//
// Only the connect line carries the client's address and username, so the
// decoder keeps a map client id → (address, username) for connected clients,
// bounded by maxMosquittoClients (beyond it, an arbitrary entry is dropped and
// that client's later events lack its IP). The decoder is therefore per
// stream: feed it one broker's lines in order. The address of the latest "New
// connection from" line is used for an authentication failure (best effort:
// Mosquitto does not log the client id and address together before auth).
type mosquitto struct {
	base
	loc      *time.Location // of times written without a zone
	clients  map[string]mqttClient
	lastConn []byte
	subFrom  []byte // client of the SUBSCRIBE/UNSUBSCRIBE whose topic lines follow
	subOp    []byte
	ipBuf    []byte
}

// MQTT operations, the method part of broker commands (read-only).
var (
	opConnect     = []byte("CONNECT")
	opDisconnect  = []byte("DISCONNECT")
	opPublish     = []byte("PUBLISH")
	opSubscribe   = []byte("SUBSCRIBE")
	opUnsubscribe = []byte("UNSUBSCRIBE")
)

type mqttClient struct{ addr, user []byte }

const maxMosquittoClients = 1 << 16

func init() {
	register(schemas.FormatMosquitto, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceBroker)
		return &mosquitto{base: b, loc: b.loc, clients: make(map[string]mqttClient)}, err
	})
}

func (d *mosquitto) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.begin(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoMQTT
	msg, ok := d.timestamp(line, now)
	if !ok {
		return d.fail(schemas.DeadLetterBadTimestamp, "the line does not start with a Unix time, %Y-%m-%dT%H:%M:%S or a syslog/journald prefix, then ': '")
	}
	var client []byte
	switch {
	case hasPrefix(msg, "New client connected from "):
		rest := msg[len("New client connected from "):]
		i := indexOf(rest, " as ")
		if i < 0 {
			return d.fail(schemas.DeadLetterMalformedLine, "connect line without ' as '")
		}
		addr := rest[:i]
		rest = rest[i+4:]
		client, rest = field(rest, ' ')
		if j := indexOf(rest, "u'"); j >= 0 {
			u := rest[j+2:]
			if k := lastIndexOf(u, "')"); k >= 0 {
				r.username = u[:k]
			}
		}
		if err := d.setIP(addr); err != nil {
			return err
		}
		d.remember(client, r.ipText, r.username)
		r.method, r.auth = opConnect, schemas.AuthOK
	case hasPrefix(msg, "New connection from "):
		a, _ := field(msg[len("New connection from "):], ' ')
		d.lastConn = append(d.lastConn[:0], a...)
		return ErrSkip
	case hasPrefix(msg, "Received PUBLISH from "), hasPrefix(msg, "Denied PUBLISH from "):
		rest := msg[indexOf(msg, " from ")+len(" from "):]
		client, rest = field(rest, ' ')
		q := indexByte(rest, '\'')
		e := lastIndexOf(rest, "', ... (")
		if q < 0 || e <= q {
			return d.fail(schemas.DeadLetterMalformedLine, "PUBLISH line without 'topic', ... (n bytes)")
		}
		r.path = rest[q+1 : e]
		n, _ := field(rest[e+len("', ... ("):], ' ')
		r.bytesIn, _ = atou(n)
		r.method, r.auth = opPublish, schemas.AuthOK
		if msg[0] == 'D' {
			r.auth, r.status = schemas.AuthFailed, 135 // MQTT 5 "not authorized"
		}
		d.lookup(client)
	case hasPrefix(msg, "Received SUBSCRIBE from "), hasPrefix(msg, "Received UNSUBSCRIBE from "):
		d.subOp = opSubscribe
		if msg[9] == 'U' {
			d.subOp = opUnsubscribe
		}
		c, _ := field(msg[indexOf(msg, " from ")+len(" from "):], ' ')
		d.subFrom = append(d.subFrom[:0], c...)
		return ErrSkip
	case len(msg) > 1 && msg[0] == '\t' && len(d.subFrom) > 0:
		topic := msg[1:]
		if i := indexOf(topic, " (QoS "); i >= 0 {
			topic = topic[:i]
		}
		client, r.path, r.method, r.auth = d.subFrom, topic, d.subOp, schemas.AuthOK
		d.lookup(client)
	case hasPrefix(msg, "Client "):
		var addr []byte
		var ok bool
		client, addr, ok = d.clientLine(msg[len("Client "):])
		if ok && client == nil {
			return d.fail(schemas.DeadLetterMalformedLine, "client line with '[' and no '] ' after its address")
		}
		if !ok {
			return ErrSkip // "negotiated ... cipher", "already connected, closing old connection", ...
		}
		if r.method[0] == 'D' { // DISCONNECT: the client is gone
			defer d.forget(client)
		}
		if len(addr) > 0 {
			if err := d.setIP(addr); err != nil {
				return err
			}
		}
	case hasPrefix(msg, "Socket error on client ") && hasSuffix(msg, ", disconnecting."):
		client = msg[len("Socket error on client ") : len(msg)-len(", disconnecting.")]
		d.lookup(client)
		r.method, r.auth = opDisconnect, schemas.AuthNone
		defer d.forget(client)
	default:
		return ErrSkip
	}
	if len(client) == 0 || string(client) == "<unknown>" {
		r.clientID = nil
	} else {
		r.clientID = client
	}
	if err := d.finish(ev, seq, lineNo, now); err != nil {
		return err
	}
	return nil
}

// timestamp parses the line's time prefix and returns the message after it:
// Mosquitto's own ("1767607200: ", or log_timestamp_format "%Y-%m-%dT%H:%M:%S: "
// or "%Y-%m-%d %H:%M:%S: " in the source's zone), after an optional syslog or
// journald prefix whose time is used when Mosquitto wrote none (log_dest syslog).
func (d *mosquitto) timestamp(line []byte, now int64) ([]byte, bool) {
	r := &d.rec
	msg, st, sys := stripSyslog(line, d.loc, now)
	if t, rest, ok := d.ownTime(msg); ok {
		r.time, r.haveTime = t, true
		return rest, true
	}
	if sys && st != 0 {
		r.time, r.haveTime = st, true
		return msg, true
	}
	return nil, false
}

// ownTime parses Mosquitto's own time prefix.
func (d *mosquitto) ownTime(line []byte) (int64, []byte, bool) {
	i := 0
	var sec int64
	for i < len(line) && line[i] >= '0' && line[i] <= '9' && i < 12 {
		sec = sec*10 + int64(line[i]-'0')
		i++
	}
	if i > 0 && i+1 < len(line) && line[i] == ':' && line[i+1] == ' ' {
		return sec * 1e9, line[i+2:], true
	}
	if len(line) > 21 && line[19] == ':' && line[20] == ' ' {
		if t, ok := wallTime(line[:19], d.loc); ok {
			return t, line[21:], true
		}
	}
	return 0, nil, false
}

// clientLine reads what follows "Client " in a line about one client:
//
//	dev-17 disconnected.                                   2.0 (also: closed its connection, has exceeded timeout, ...)
//	dev-17 disconnected, not authorised.                   2.0: an authentication failure
//	dev-17 [203.0.113.5:51234] disconnected: not authorised.   2.1: the client's address, then the reason
//
// It sets the record's method, auth and status (an MQTT reason code: the
// CONNACK's for a refused connection, MQTT 5 DISCONNECT's otherwise) and
// returns the client id and, for 2.1 lines, its address; ok is false for
// lines that are not about a connection ending, and client nil with ok true
// for a malformed address.
func (d *mosquitto) clientLine(p []byte) (client, addr []byte, ok bool) {
	r := &d.rec
	client, p = field(p, ' ')
	if len(p) > 0 && p[0] == '[' {
		j := lastIndexOf(p, "] ")
		if j < 0 {
			return nil, nil, true // malformed
		}
		addr, p = hostOnly(p[1:j]), p[j+2:]
	}
	r.method, r.auth = opDisconnect, schemas.AuthNone
	switch string(p) {
	case "disconnected.", "closed its connection.":
	case "has exceeded timeout, disconnecting.":
		r.status = 141 // keep alive timeout
	case "been disconnected by administrative action.":
		r.status = 152
	case "disconnected due to malformed packet.":
		r.status = 129
	case "disconnected due to protocol error.":
		r.status = 130
	case "disconnected due to oversize packet.", "disconnected due to oversize payload.":
		r.status = 149
	case "disconnected due to exceeding the receive maximum.":
		r.status = 147
	default:
		var reason []byte
		switch {
		case hasPrefix(p, "disconnected, ") && hasSuffix(p, "."):
			reason = p[len("disconnected, ") : len(p)-1]
		case hasPrefix(p, "disconnected: ") && hasSuffix(p, "."):
			reason = p[len("disconnected: ") : len(p)-1]
		case hasPrefix(p, "disconnected due to "):
			r.status = 131 // out of memory, a feature not allowed: implementation specific
			return client, addr, true
		default:
			return nil, nil, false
		}
		switch string(reason) {
		case "not authorised":
			r.method, r.auth, r.status = opConnect, schemas.AuthFailed, 5 // CONNACK "not authorized"
		case "bad username or password":
			r.method, r.auth, r.status = opConnect, schemas.AuthFailed, 4
		case "client banned":
			r.method, r.auth, r.status = opConnect, schemas.AuthFailed, 138
		case "bad authentication method":
			r.method, r.auth, r.status = opConnect, schemas.AuthFailed, 140
		case "non-matching http origin":
			r.method, r.auth, r.status = opConnect, schemas.AuthFailed, 135
		case "client identifier not valid":
			r.method, r.status = opConnect, 2 // CONNACK "identifier rejected"
		case "server unavailable":
			r.status = 136
		case "server busy":
			r.status = 137
		case "quota exceeded":
			r.status = 151
		case "connection rate exceeded":
			r.status = 159
		case "session taken over":
			r.status = 142
		case "implementation specific error":
			r.status = 131
		} // else a socket error in words ("Connection reset by peer"): a plain disconnect
	}
	if r.auth == schemas.AuthFailed && len(addr) == 0 {
		// 2.0 logs no address with the failure: the latest "New connection from".
		addr = d.lastConn
	}
	if len(addr) == 0 {
		d.lookup(client)
	} else if c, ok := d.clients[string(client)]; ok {
		d.rec.username = c.user // 2.1 logs the address, never the username: the connect line's
	}
	return client, addr, true
}

// hostOnly drops the port of "203.0.113.5:51234", "::1:49198" (2.1 writes
// an IPv6 address unbracketed before its port) and "[::1]:49198".
func hostOnly(b []byte) []byte {
	if len(b) > 0 && b[0] == '[' {
		return stripPort(b)
	}
	i := lastIndexOf(b, ":")
	if i <= 0 {
		return b
	}
	if _, ok := atou(b[i+1:]); !ok {
		return b
	}
	return b[:i]
}

// lookup fills the IP and username remembered for client.
func (d *mosquitto) lookup(client []byte) {
	c, ok := d.clients[string(client)]
	if !ok {
		return
	}
	d.ipBuf = append(d.ipBuf[:0], c.addr...)
	_ = d.setIP(d.ipBuf)
	d.rec.username = c.user
}

func (d *mosquitto) remember(client, addr, user []byte) {
	if len(client) == 0 {
		return
	}
	if _, ok := d.clients[string(client)]; !ok && len(d.clients) >= maxMosquittoClients {
		for k := range d.clients {
			delete(d.clients, k)
			break
		}
	}
	d.clients[string(client)] = mqttClient{addr: append([]byte(nil), addr...), user: append([]byte(nil), user...)}
}

func (d *mosquitto) forget(client []byte) { delete(d.clients, string(client)) }

func indexOf(b []byte, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func lastIndexOf(b []byte, s string) int {
	for i := len(b) - len(s); i >= 0; i-- {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

func hasSuffix(b []byte, s string) bool {
	return len(b) >= len(s) && string(b[len(b)-len(s):]) == s
}
