// Package mqtt is a minimal MQTT 3.1.1 client over TCP: just what iotwatch
// needs to drive a broker's control API (Mosquitto's dynamic-security plugin
// on the $CONTROL topics, in package enforce/mosquitto).
//
// Supported: CONNECT (clean session, client id, username, password,
// keep-alive) and CONNACK; PUBLISH with QoS 0 and 1 in both directions
// (PUBACK sent for incoming QoS 1 and awaited for outgoing QoS 1); SUBSCRIBE
// and SUBACK; PINGREQ/PINGRESP keep-alive; DISCONNECT. Not supported: QoS 2
// (incoming QoS 2 messages close the connection), will messages, retained
// message flags on publish, persistent sessions and redelivery, TLS,
// automatic reconnection (callers redial), MQTT 5. It is not a general MQTT
// library; use one if you need more.
package mqtt

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Packet types (MQTT 3.1.1 section 2.2.1), in the high nibble of the first byte.
const (
	typeConnect     = 1
	typeConnack     = 2
	typePublish     = 3
	typePuback      = 4
	typePubrec      = 5
	typeSubscribe   = 8
	typeSuback      = 9
	typeUnsuback    = 11
	typePingreq     = 12
	typePingresp    = 13
	typeDisconnect  = 14
	maxRemainingLen = 268_435_455 // the largest the 4-byte varint encodes
)

// DefaultMaxPacket bounds the size of packets a Client accepts.
const DefaultMaxPacket = 1 << 20

// ErrMalformed is wrapped by errors about packets that break the protocol.
var ErrMalformed = errors.New("malformed MQTT packet")

// packet is one decoded control packet: the type and flags of the fixed
// header and the remaining bytes (variable header and payload).
type packet struct {
	typ, flags byte
	body       []byte
}

// readPacket reads one packet from r. Packets whose remaining length exceeds
// max are refused without reading their body.
func readPacket(r *bufio.Reader, max int) (packet, error) {
	b0, err := r.ReadByte()
	if err != nil {
		return packet{}, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return packet{}, fmt.Errorf("cannot read remaining length: %w: more than 4 bytes", ErrMalformed)
		}
		b, err := r.ReadByte()
		if err != nil {
			return packet{}, noEOF(err)
		}
		n += int(b&0x7f) * mul
		mul <<= 7
		if b&0x80 == 0 {
			break
		}
	}
	if n > max {
		return packet{}, fmt.Errorf("cannot read packet of type %d: %w: %d bytes exceed the limit of %d", b0>>4, ErrMalformed, n, max)
	}
	p := packet{typ: b0 >> 4, flags: b0 & 0x0f, body: make([]byte, n)}
	if _, err := io.ReadFull(r, p.body); err != nil {
		return packet{}, noEOF(err)
	}
	return p, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendPacket appends a packet with the fixed header (typ, flags) and body.
func appendPacket(dst []byte, typ, flags byte, body ...[]byte) []byte {
	n := 0
	for _, b := range body {
		n += len(b)
	}
	if n > maxRemainingLen {
		panic(fmt.Sprintf("BUG: MQTT packet body of %d bytes", n))
	}
	dst = append(dst, typ<<4|flags)
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			break
		}
	}
	for _, b := range body {
		dst = append(dst, b...)
	}
	return dst
}

// appendString appends s as an MQTT UTF-8 string (2-byte length prefix).
func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// readString splits an MQTT string off the front of b.
func readString(b []byte) (string, []byte, error) {
	if len(b) < 2 {
		return "", nil, fmt.Errorf("cannot read string: %w: %d bytes left", ErrMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b) < 2+n {
		return "", nil, fmt.Errorf("cannot read string of %d bytes: %w: %d bytes left", n, ErrMalformed, len(b)-2)
	}
	return string(b[2 : 2+n]), b[2+n:], nil
}

// encodeConnect returns a CONNECT packet with a clean session.
func encodeConnect(clientID, username, password string, keepAliveSec uint16) []byte {
	var flags byte = 0x02 // clean session
	if username != "" {
		flags |= 0x80
	}
	if password != "" {
		flags |= 0x40
	}
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 4, flags)
	vh = binary.BigEndian.AppendUint16(vh, keepAliveSec)
	vh = appendString(vh, clientID)
	if username != "" {
		vh = appendString(vh, username)
	}
	if password != "" {
		vh = appendString(vh, password)
	}
	return appendPacket(nil, typeConnect, 0, vh)
}

// decodeConnack returns the CONNACK return code (0 accepted).
func decodeConnack(p packet) (byte, error) {
	if p.typ != typeConnack || len(p.body) != 2 {
		return 0, fmt.Errorf("cannot decode CONNACK: %w: type %d with %d bytes", ErrMalformed, p.typ, len(p.body))
	}
	return p.body[1], nil
}

// encodePublish returns a PUBLISH packet; id is used only when qos > 0.
func encodePublish(topic string, payload []byte, qos byte, id uint16) []byte {
	vh := appendString(nil, topic)
	if qos > 0 {
		vh = binary.BigEndian.AppendUint16(vh, id)
	}
	return appendPacket(nil, typePublish, qos<<1, vh, payload)
}

// message is a decoded PUBLISH.
type message struct {
	topic   string
	qos     byte
	id      uint16
	payload []byte
}

func decodePublish(p packet) (message, error) {
	m := message{qos: p.flags >> 1 & 3}
	if m.qos == 3 {
		return message{}, fmt.Errorf("cannot decode PUBLISH: %w: QoS 3", ErrMalformed)
	}
	topic, rest, err := readString(p.body)
	if err != nil {
		return message{}, fmt.Errorf("cannot decode PUBLISH topic: %w", err)
	}
	m.topic = topic
	if m.qos > 0 {
		if len(rest) < 2 {
			return message{}, fmt.Errorf("cannot decode PUBLISH packet id: %w", ErrMalformed)
		}
		m.id, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	m.payload = rest
	return m, nil
}

// encodeSubscribe returns a SUBSCRIBE packet for one topic filter.
func encodeSubscribe(id uint16, filter string, qos byte) []byte {
	vh := binary.BigEndian.AppendUint16(nil, id)
	vh = appendString(vh, filter)
	vh = append(vh, qos)
	return appendPacket(nil, typeSubscribe, 0x02, vh)
}

// decodeID returns the packet id leading a PUBACK, SUBACK or UNSUBACK body,
// and what follows it.
func decodeID(p packet) (uint16, []byte, error) {
	if len(p.body) < 2 {
		return 0, nil, fmt.Errorf("cannot decode packet id of type %d: %w", p.typ, ErrMalformed)
	}
	return binary.BigEndian.Uint16(p.body), p.body[2:], nil
}

func encodeID(typ byte, id uint16) []byte {
	return appendPacket(nil, typ, 0, binary.BigEndian.AppendUint16(nil, id))
}
