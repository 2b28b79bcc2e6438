package formats

import (
	"os"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// traefikLine carries every identity Traefik's JSON access log can hold: a
// client certificate, a basicAuth user, an API key and a device header kept
// by fields.headers, and the client address.
const traefikLine = `{"ClientAddr":"203.0.113.7:51234","ClientHost":"203.0.113.7","ClientPort":"51234","ClientUsername":"meter-7",` +
	`"DownstreamContentSize":3,"DownstreamStatus":200,"Duration":9012000,"OriginStatus":200,"RequestMethod":"POST",` +
	`"RequestPath":"/v1/devices/lock-7/unlock","RequestProtocol":"HTTP/1.1","StartUTC":"2026-01-05T10:00:00.1Z",` +
	`"TLSClientSubject":"CN=lock-10,O=Acme Devices","level":"info","msg":"","request_X-Api-Key":"sk_live_7f3a",` +
	`"request_X-Device-Id":"lock-7","time":"2026-01-05T10:00:00Z"}`

// TestTraefikIdentity: --identity picks the device from a Traefik record by
// the same rules as every format (per format and source, header:NAME over a
// kept request_<Header>, API keys only as their keyed hash), and a redacted
// header is no identity.
func TestTraefikIdentity(t *testing.T) {
	secret := []byte("k1")
	keyHash := KeyHasher(secret)("sk_live_7f3a")
	f := func(line, identity string, secret []byte, device string, by schemas.IDMethod) {
		t.Helper()
		d, err := New(schemas.FormatTraefik, Options{Identity: identity, Source: "traefik-edge-1", KeySecret: secret})
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		if err := d.Decode([]byte(line), 1, 0, now, &ev); err != nil {
			t.Fatalf("identity %q: %v", identity, err)
		}
		if string(ev.Device) != device || ev.IDMethod != by {
			t.Errorf("identity %q: device %q by %s, want %q by %s", identity, ev.Device, ev.IDMethod, device, by)
		}
		if strings.Contains(render(&ev), "sk_live") {
			t.Errorf("identity %q: the API key is in clear: %s", identity, render(&ev))
		}
	}
	f(traefikLine, "auto", secret, "lock-10", schemas.IDCertificate)
	f(traefikLine, "certificate", secret, "lock-10", schemas.IDCertificate)
	f(traefikLine, "username", secret, "meter-7", schemas.IDToken)
	f(traefikLine, "api_key", secret, keyHash, schemas.IDAPIKey)
	f(traefikLine, "api_key", nil, "203.0.113.7", schemas.IDClientIP) // no secret: the key is ignored
	f(traefikLine, "client_ip", secret, "203.0.113.7", schemas.IDClientIP)
	f(traefikLine, "header:X-Device-Id", secret, "lock-7", schemas.IDToken)
	f(traefikLine, "header:x_device_id", secret, "lock-7", schemas.IDToken)
	f(traefikLine, "auto,traefik=header:X-Device-Id", secret, "lock-7", schemas.IDToken)
	f(traefikLine, "auto,*.traefik-edge-1=username", secret, "meter-7", schemas.IDToken)
	f(traefikLine, "auto,nginx-json=header:X-Device-Id", secret, "lock-10", schemas.IDCertificate) // another format's rule
	f(traefikLine, "header:X-Tenant-Id", secret, "203.0.113.7", schemas.IDClientIP)                // a header not logged

	noCert := strings.Replace(traefikLine, `"TLSClientSubject":"CN=lock-10,O=Acme Devices",`, "", 1)
	f(noCert, "auto", secret, keyHash, schemas.IDAPIKey)
	f(noCert, "auto", nil, "meter-7", schemas.IDToken) // no secret: the key is ignored
	noUser := strings.Replace(noCert, `"ClientUsername":"meter-7"`, `"ClientUsername":"-"`, 1)
	f(noUser, "auto", secret, keyHash, schemas.IDAPIKey)
	f(noUser, "auto", nil, "203.0.113.7", schemas.IDClientIP)
	redacted := strings.NewReplacer(`"sk_live_7f3a"`, `"REDACTED"`, `"lock-7"`, `"REDACTED"`).Replace(noUser)
	f(redacted, "auto", secret, "203.0.113.7", schemas.IDClientIP) // never one shared "REDACTED" device
	f(redacted, "header:X-Device-Id", secret, "203.0.113.7", schemas.IDClientIP)
	f(redacted, "api_key", secret, "203.0.113.7", schemas.IDClientIP)
}

// TestTraefikVerdict: the forwardAuth verdict from the status the client got,
// the service's status (0: Traefik answered itself) and the enforcer's
// action header.
func TestTraefikVerdict(t *testing.T) {
	f := func(status uint16, origin uint64, action string, want schemas.Verdict) {
		t.Helper()
		if got := traefikVerdict(status, origin, []byte(action)); got != want {
			t.Errorf("traefikVerdict(%d, %d, %q) = %s, want %s", status, origin, action, got, want)
		}
	}
	f(403, 0, "block", schemas.VerdictDenied)
	f(429, 0, "throttle", schemas.VerdictDenied)
	f(403, 0, "", schemas.VerdictNone) // another middleware's 403 (ipAllowList): the device's
	f(403, 403, "", schemas.VerdictNone)
	f(500, 0, "", schemas.VerdictUnavailable) // forwardAuth could not reach the enforcer
	f(503, 0, "", schemas.VerdictUnavailable) // the enforcer's own 5xx, passed on
	f(502, 0, "", schemas.VerdictUnavailable)
	f(504, 0, "", schemas.VerdictUnavailable)
	f(500, 500, "", schemas.VerdictNone) // the service failed
	f(502, 502, "", schemas.VerdictNone)
	f(499, 0, "", schemas.VerdictNone) // the client went away
	f(200, 200, "", schemas.VerdictNone)
	f(200, 200, "throttle", schemas.VerdictNone)
}

// TestTraefikCLFHint: a line in Traefik's default text formats is
// dead-lettered with a hint, anything else that is not a JSON object as what
// it is.
func TestTraefikCLFHint(t *testing.T) {
	d, err := New(schemas.FormatTraefik, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := func(line, reason, detail string) {
		t.Helper()
		var ev schemas.Event
		err := d.Decode([]byte(line), 1, 0, now, &ev)
		de, ok := err.(*schemas.DecodeError)
		if !ok || de.Reason != reason || !strings.Contains(de.Detail, detail) {
			t.Errorf("Decode(%q) = %v, want %s containing %q", line, err, reason, detail)
		}
	}
	f(`2001:db8::7 - alice [05/Jan/2026:10:00:09 +0000] "GET / HTTP/1.1" 200 1 "-" "-" 1 "api@file" "http://127.0.0.1:8081" 1ms`, schemas.DeadLetterMalformedLine, "accessLog.format")
	f(`- - - [05/Jan/2026:10:00:09 +0000] "- - -" 400 0 "-" "-"`, schemas.DeadLetterMalformedLine, "accessLog.format")
	f(`203.0.113.7 - - [05/Jan/2026:10:00:09] "GET / HTTP/1.1" 200 1`, schemas.DeadLetterNotObject, "not a JSON object") // no zone: not CLF
	f(`time="2026-01-05T10:00:00Z" level=error msg="Error calling http://127.0.0.1:9181/check"`, schemas.DeadLetterNotObject, "not a JSON object")
	f(`<134>Jan  5 10:00:00 edge traefik: {"StartUTC":"2026-01-05T10:00:00Z"}`, schemas.DeadLetterMalformedJSON, "expected '{'")
}

// TestTraefikShippedConfig: deploy/traefik's static configuration writes the
// JSON access log and keeps what the decoder reads: the core fields
// (OriginStatus for outages) and the enforcer's action header.
func TestTraefikShippedConfig(t *testing.T) {
	b, err := os.ReadFile("../../deploy/traefik/traefik.yml")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{
		"format: json",
		"defaultMode: keep",
		schemas.HeaderEnforceAction + ": keep",
		"X-Device-Id: keep",
		"filename: /etc/traefik/dynamic.yml",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("deploy/traefik/traefik.yml lacks %q", want)
		}
	}
}
