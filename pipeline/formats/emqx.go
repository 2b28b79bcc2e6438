package formats

import (
	"github.com/iotwatch/iotwatch/schemas"
)

// emqx decodes the event JSON that EMQX's rule engine and webhooks post
// (EMQX 5 "event" field; EMQX 4 webhook "action" names such as
// "message_publish" are accepted too). Events:
//
//	client.connected                        CONNECT, auth ok
//	client.disconnected                     DISCONNECT
//	message.publish                         PUBLISH topic, bytes in = payload length
//	session.subscribed / session.unsubscribed  SUBSCRIBE / UNSUBSCRIBE topic
//	client.connack, client.check_authn_complete with a reason_code other than
//	  success                               CONNECT, auth failed, status = the MQTT 5 reason code
//	client.check_authz_complete with result deny  PUBLISH/SUBSCRIBE topic, auth failed, status 135
//
// Successful connacks and authentications, allowed authorizations and the
// other events (message.delivered, ...) return ErrSkip. Time is "timestamp"
// (Unix ms; a value below 1e11 is read as seconds, as EMQX 4 wrote some),
// else EMQX 4's "ts" or the event's own publish_received_at/connected_at/
// disconnected_at; an event with no time at all (EMQX 4's client_disconnected)
// gets its arrival time (Decode's now; dead-lettered when now is 0). EMQX 4
// message events name the client from_client_id and from_username.
// Identity "auto": a certificate common name (cn or cert_common_name, when
// the rule selects it), then clientid.
type emqx struct{ jsonBase }

func init() {
	register(schemas.FormatEMQX, func(o Options) (Decoder, error) {
		b, err := newBase(o, schemas.SourceBroker)
		return &emqx{jsonBase{base: b}}, err
	})
}

func (d *emqx) Decode(line []byte, seq uint64, lineNo uint32, now int64, ev *schemas.Event) error {
	if err := d.parse(line, ev); err != nil {
		return err
	}
	r := &d.rec
	r.proto = schemas.ProtoMQTT
	var event, reason, result, action []byte
	var tsAlt float64
	var payloadLen uint64
	for i := range d.f.toks {
		t := &d.f.toks[i]
		d.configured(t.path, t.val)
		var err error
		switch string(t.path) {
		case "event":
			event = str(t)
		case "action":
			action = str(t)
		case "timestamp":
			n, present, ok := num(t)
			if !ok || !present || n > 1e14 {
				return d.fail(schemas.DeadLetterBadTimestamp, "timestamp is not Unix milliseconds")
			}
			r.time, r.haveTime = emqxTime(n), true
		case "ts": // EMQX 4 webhooks: Unix ms
			n, present, ok := num(t)
			if !ok || !present || n > 1e14 {
				return d.fail(schemas.DeadLetterBadTimestamp, "ts is not Unix milliseconds")
			}
			tsAlt = n
		case "publish_received_at", "connected_at", "disconnected_at":
			if n, present, ok := num(t); ok && present && n <= 1e14 {
				tsAlt = n
			}
		case "clientid", "from_client_id": // from_*: EMQX 4 webhook message_* events
			r.clientID = str(t)
		case "username", "from_username":
			if u := str(t); string(u) != "undefined" {
				r.username = u
			}
		case "peername", "peerhost", "ipaddress":
			if r.ipText == nil {
				err = d.setIP(str(t))
			}
		case "topic":
			r.path = str(t)
		case "payload":
			payloadLen = uint64(len(t.val))
		case "reason_code", "reason":
			reason = str(t)
		case "result":
			result = str(t)
		case "cn", "cert_common_name":
			if c := str(t); string(c) != "undefined" {
				r.cert = c
			}
		}
		if err != nil {
			return err
		}
	}
	if !r.haveTime && tsAlt > 0 {
		r.time, r.haveTime = emqxTime(tsAlt), true
	}
	if !r.haveTime && now > 0 {
		// EMQX 4's client_disconnected (and others) carry no time: the
		// arrival time stands for it (the webhook posts as it happens).
		r.time, r.haveTime = now, true
	}
	if len(event) == 0 && len(action) > 0 && indexByte(action, '_') > 0 {
		event, action = action, nil // EMQX 4 webhook: "action":"message_publish"
	}
	if len(event) == 0 {
		return d.fail(schemas.DeadLetterMissingField, "the record has no event")
	}
	switch eventName(event) {
	case "client.connected":
		r.method, r.auth = opConnect, schemas.AuthOK
	case "client.disconnected":
		r.method, r.auth = opDisconnect, schemas.AuthNone
	case "message.publish":
		r.method, r.auth, r.bytesIn = opPublish, schemas.AuthOK, payloadLen
	case "session.subscribed":
		r.method, r.auth = opSubscribe, schemas.AuthOK
	case "session.unsubscribed":
		r.method, r.auth = opUnsubscribe, schemas.AuthOK
	case "client.connack", "client.check_authn_complete", "client.authenticate":
		if len(reason) == 0 || string(reason) == "success" {
			return ErrSkip
		}
		r.method, r.auth, r.status = opConnect, schemas.AuthFailed, mqttReason(reason)
	case "client.check_authz_complete", "client.authorize":
		if string(result) != "deny" {
			return ErrSkip
		}
		r.method = opPublish
		if string(action) == "subscribe" {
			r.method = opSubscribe
		}
		r.auth, r.status = schemas.AuthFailed, 135
	default:
		return ErrSkip
	}
	if hasPrefix(r.path, "$SYS/") && len(r.clientID) == 0 {
		return ErrSkip // broker-internal
	}
	return d.finish(ev, seq, lineNo, now)
}

// eventName maps EMQX 4 "message_publish" to "message.publish" (static strings, no allocation).
func eventName(e []byte) string {
	switch string(e) {
	case "client_connected":
		return "client.connected"
	case "client_disconnected":
		return "client.disconnected"
	case "message_publish":
		return "message.publish"
	case "session_subscribed":
		return "session.subscribed"
	case "session_unsubscribed":
		return "session.unsubscribed"
	case "client_connack":
		return "client.connack"
	}
	switch string(e) {
	case "client.connected", "client.disconnected", "message.publish", "session.subscribed", "session.unsubscribed",
		"client.connack", "client.check_authn_complete", "client.authenticate", "client.check_authz_complete", "client.authorize":
		return unsafeString(e)
	}
	return ""
}

func emqxTime(n float64) int64 {
	if n < 1e11 {
		return int64(n * 1e9)
	}
	return int64(n) * 1e6
}

// mqttReason maps EMQX's reason names to MQTT 5 reason codes.
func mqttReason(r []byte) uint16 {
	switch string(r) {
	case "not_authorized":
		return 135
	case "bad_username_or_password":
		return 134
	case "client_identifier_not_valid":
		return 133
	case "banned":
		return 138
	case "bad_authentication_method":
		return 140
	case "server_unavailable", "server_busy":
		return 136
	}
	return 128 // unspecified error
}
