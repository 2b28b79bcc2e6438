package formats

import (
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestIdentityFor: rules per format and source id pick the identity, the most
// specific first; the global identity of old is a one-rule spec; every rule
// is checked whichever applies.
func TestIdentityFor(t *testing.T) {
	const spec = "header:X-Device-Id, mosquitto=username, emqx=mqtt_client_id, *.edge-2=api_key, nginx.edge-3=certificate"
	f := func(spec, format, source, want string) {
		t.Helper()
		got, err := IdentityFor(spec, format, source)
		if err != nil || got != want {
			t.Errorf("IdentityFor(%q, %q, %q) = %q, %v; want %q", spec, format, source, got, err, want)
		}
	}
	f(spec, schemas.FormatNginx, "edge-1", "header:X-Device-Id")
	f(spec, schemas.FormatMosquitto, "broker-1", "username")
	f(spec, schemas.FormatEMQX, "edge-2", "api_key") // *.SOURCE before FORMAT
	f(spec, schemas.FormatNginx, "edge-3", "certificate")
	f(spec, schemas.FormatKong, "edge-3", "header:X-Device-Id")
	f("", schemas.FormatNginx, "edge-1", "auto")
	f("username", schemas.FormatKong, "k", "username")
	f("mosquitto=username", schemas.FormatNginx, "edge-1", "auto")

	bad := func(spec, want string) {
		t.Helper()
		_, err := IdentityFor(spec, schemas.FormatNginx, "edge-1")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("IdentityFor(%q): %v; want an error naming %q", spec, err, want)
		}
		if _, err := New(schemas.FormatNginx, Options{Identity: spec}); err == nil {
			t.Errorf("New accepted identity %q", spec)
		}
	}
	bad("auto,mosquito=username", `"mosquito" is not a format`)
	bad("auto,mosquitto=fingerprint", `"fingerprint"`)
	bad("auto,username", "more than one default")
	bad("nginx=auto,nginx=username", `"nginx" is given twice`)
	bad("*=username", "*.SOURCE")
	bad("nginx.=username", "empty source id")
}

func TestGeneratedClientID(t *testing.T) {
	for id, want := range map[string]bool{
		"auto-3F2504E0-4F89-11D3-9A0C-0305E82C3301": true, // Mosquitto's auto_id_prefix + UUID
		"auto-5b0a9ef1":                        true,
		"mosq-Tq9lYzV0d3Bv1XhA":                true, // libmosquitto, mosquitto_ctrl
		"mqttjs_3f2a9c1b":                      true,
		"auto-lock":                            false,
		"therm-5":                              false,
		"mosq-bridge":                          false,
		"iotwatch-mosquitto-1":                 false,
		"3f2504e0-4f89-11d3-9a0c-0305e82c3301": false, // a UUID may be a device's own name
	} {
		if got := GeneratedClientID([]byte(id)); got != want {
			t.Errorf("GeneratedClientID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestMQTTAutoIdentity: with identity auto an MQTT client is its username,
// whatever client id it connects with; a generated client id without a
// username is its address; a chosen client id without a username is itself.
// A rule for the format overrides the default. The lines are written in
// Mosquitto 2.0's log format (log_type all), as mosquitto.golden's.
func TestMQTTAutoIdentity(t *testing.T) {
	lines := []string{
		"1767607200: New client connected from 203.0.113.5:51234 as auto-3F2504E0-4F89-11D3-9A0C-0305E82C3301 (p2, c1, k60, u'therm-5').",
		"1767607201: Received PUBLISH from auto-3F2504E0-4F89-11D3-9A0C-0305E82C3301 (d0, q0, r0, m0, 'devices/therm-5/telemetry', ... (4 bytes))",
		"1767607202: New client connected from 203.0.113.5:51300 as auto-9C1D44B2-0A2E-4C1B-8F00-5E0A6B7C8D9E (p2, c1, k60, u'therm-5').",
		"1767607203: New connection from 198.51.100.9:40000 on port 1883.",
		"1767607203: Client auto-0B6F3A52-77E1-4DC1-9A1D-2C3B4D5E6F70 disconnected, not authorised.",
		"1767607204: New client connected from 192.0.2.7:1883 as mosq-Tq9lYzV0d3Bv1XhA (p2, c1, k60).",
		"1767607205: New client connected from 192.0.2.8:1883 as sensor-8 (p2, c1, k60).",
	}
	type want struct {
		device string
		by     schemas.IDMethod
	}
	decode := func(identity string) []want {
		t.Helper()
		d, err := New(schemas.FormatMosquitto, Options{Identity: identity, Source: "broker-1"})
		if err != nil {
			t.Fatal(err)
		}
		var out []want
		var ev schemas.Event
		for i, l := range lines {
			if err := d.Decode([]byte(l), 1, uint32(i), 0, &ev); err == ErrSkip {
				continue
			} else if err != nil {
				t.Fatalf("line %d: %v", i, err)
			}
			out = append(out, want{string(ev.Device), ev.IDMethod})
		}
		return out
	}
	check := func(identity string, w []want) {
		t.Helper()
		got := decode(identity)
		if len(got) != len(w) {
			t.Fatalf("identity %q: %v, want %v", identity, got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("identity %q, event %d: device %q by %v, want %q by %v", identity, i, got[i].device, got[i].by, w[i].device, w[i].by)
			}
		}
	}
	user := want{"therm-5", schemas.IDMQTTUsername}
	check("auto", []want{user, user, user,
		{"198.51.100.9", schemas.IDClientIP}, {"192.0.2.7", schemas.IDClientIP}, {"sensor-8", schemas.IDMQTTClient}})
	check("header:X-Device-Id,mosquitto=username", []want{user, user, user,
		{"198.51.100.9", schemas.IDClientIP}, {"192.0.2.7", schemas.IDClientIP}, {"sensor-8", schemas.IDMQTTClient}})
	check("auto,*.broker-1=mqtt_client_id", []want{
		{"auto-3F2504E0-4F89-11D3-9A0C-0305E82C3301", schemas.IDMQTTClient},
		{"auto-3F2504E0-4F89-11D3-9A0C-0305E82C3301", schemas.IDMQTTClient},
		{"auto-9C1D44B2-0A2E-4C1B-8F00-5E0A6B7C8D9E", schemas.IDMQTTClient},
		{"auto-0B6F3A52-77E1-4DC1-9A1D-2C3B4D5E6F70", schemas.IDMQTTClient},
		{"mosq-Tq9lYzV0d3Bv1XhA", schemas.IDMQTTClient}, {"sensor-8", schemas.IDMQTTClient}})
}
