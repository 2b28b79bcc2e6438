package mqtt

import (
	"bufio"
	"bytes"
	"errors"
	"testing"
)

func TestPacketRoundTrip(t *testing.T) {
	read := func(b []byte) packet {
		t.Helper()
		p, err := readPacket(bufio.NewReader(bytes.NewReader(b)), DefaultMaxPacket)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := bytes.Repeat([]byte("x"), 20000) // a 3-byte remaining length
	for _, qos := range []byte{0, 1} {
		p := read(encodePublish("a/b", big, qos, 77))
		m, err := decodePublish(p)
		if err != nil {
			t.Fatal(err)
		}
		wantID := uint16(0)
		if qos == 1 {
			wantID = 77
		}
		if m.topic != "a/b" || m.qos != qos || m.id != wantID || !bytes.Equal(m.payload, big) {
			t.Errorf("qos %d: decoded topic %q qos %d id %d payload %d bytes", qos, m.topic, m.qos, m.id, len(m.payload))
		}
	}
	p := read(encodeID(typePuback, 513))
	if id, rest, err := decodeID(p); p.typ != typePuback || id != 513 || len(rest) != 0 || err != nil {
		t.Errorf("PUBACK decoded as type %d id %d rest %x err %v", p.typ, id, rest, err)
	}
	p = read(encodeConnect("cid", "u", "pw", 30))
	want := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0xc2, 0, 30, 0, 3, 'c', 'i', 'd', 0, 1, 'u', 0, 2, 'p', 'w'}
	if p.typ != typeConnect || !bytes.Equal(p.body, want) {
		t.Errorf("CONNECT body %x; want %x", p.body, want)
	}
}

func TestReadPacketRejects(t *testing.T) {
	f := func(name string, in []byte, max int) {
		t.Helper()
		_, err := readPacket(bufio.NewReader(bytes.NewReader(in)), max)
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	f("5-byte length", []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, maxRemainingLen)
	f("over the limit", []byte{0x30, 0x80, 0x01}, 100)
	f("truncated body", []byte{0x30, 0x05, 0, 1}, 100)
	f("truncated length", []byte{0x30, 0x80}, 100)
	if _, err := decodePublish(packet{typ: typePublish, flags: 6, body: []byte{0, 0}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("PUBLISH with QoS 3: %v; want ErrMalformed", err)
	}
	if _, err := decodePublish(packet{typ: typePublish, flags: 2, body: []byte{0, 1, 'a', 0}}); !errors.Is(err, ErrMalformed) {
		t.Errorf("QoS 1 PUBLISH without a packet id: %v; want ErrMalformed", err)
	}
}

// FuzzReadPacket checks that the decoders never panic, never accept more
// than the limit, and that a decoded PUBLISH encodes back to the same bytes.
func FuzzReadPacket(f *testing.F) {
	f.Add(encodePublish("t", []byte("hello"), 1, 9))
	f.Add(encodePublish("$CONTROL/dynamic-security/v1/response", []byte(`{"responses":[]}`), 0, 0))
	f.Add(encodeID(typePuback, 1))
	f.Add(appendPacket(nil, typeSuback, 0, []byte{0, 1, 1}))
	f.Add(appendPacket(nil, typeConnack, 0, []byte{0, 5}))
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, in []byte) {
		const max = 4096
		p, err := readPacket(bufio.NewReader(bytes.NewReader(in)), max)
		if err != nil {
			return
		}
		if len(p.body) > max {
			t.Fatalf("accepted %d bytes over the limit %d", len(p.body), max)
		}
		_, _ = decodeConnack(p)
		_, _, _ = decodeID(p)
		if p.typ == typePublish {
			m, err := decodePublish(p)
			if err != nil {
				return
			}
			again := encodePublish(m.topic, m.payload, m.qos, m.id)
			q, err := readPacket(bufio.NewReader(bytes.NewReader(again)), max+16)
			if err != nil || !bytes.Equal(q.body, p.body) {
				t.Fatalf("PUBLISH %x re-encoded as %x (%v)", p.body, q.body, err)
			}
		}
	})
}
