package detectors_test

import (
	"testing"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestUserAgentFamily(t *testing.T) {
	f := func(ua string, want detectors.Subject) {
		t.Helper()
		if got := detectors.UserAgentFamily([]byte(ua)); got != want {
			t.Errorf("UserAgentFamily(%q) = %v, want %v", ua, got, want)
		}
	}
	f("", detectors.SubjectIPDevice)
	f("acme-sensor/2.4.1", detectors.SubjectIPDevice)
	f("2.4.1", detectors.SubjectIPDevice)
	f("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", detectors.SubjectBrowser)
	f("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", detectors.SubjectBrowser)
	f("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", detectors.SubjectCrawler)
	f("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", detectors.SubjectCrawler)
	f("python-requests/2.32.3", detectors.SubjectScript)
	f("Go-http-client/1.1", detectors.SubjectScript)
	f("curl/8.5.0", detectors.SubjectScript)
	f("Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", detectors.SubjectMonitor)
	f("kube-probe/1.31", detectors.SubjectMonitor)
}

func TestSubjectOf(t *testing.T) {
	f := func(by schemas.IDMethod, ua string, want detectors.Subject) {
		t.Helper()
		var ev schemas.Event
		ev.IDMethod = by
		ev.SetText(&ev.Firmware, []byte(ua))
		if got := detectors.SubjectOf(&ev); got != want {
			t.Errorf("SubjectOf(%v, %q) = %v, want %v", by, ua, got, want)
		}
	}
	// A device credential is a device whatever its user agent: a stolen key
	// used from a script is still the device's key.
	f(schemas.IDAPIKey, "python-requests/2.31.0", detectors.SubjectDevice)
	f(schemas.IDCertificate, "", detectors.SubjectDevice)
	f(schemas.IDMQTTClient, "", detectors.SubjectDevice)
	// A principal (token, HTTP user name) is a device only with a device's agent.
	f(schemas.IDToken, "acme-sensor/2.4.1", detectors.SubjectDevice)
	f(schemas.IDToken, "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", detectors.SubjectBrowser)
	f(schemas.IDToken, "python-requests/2.32.3", detectors.SubjectScript)
	// An address is never a device identity.
	f(schemas.IDClientIP, "acme-sensor/2.4.1", detectors.SubjectIPDevice)
	f(schemas.IDClientIP, "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", detectors.SubjectBrowser)
	for _, s := range []detectors.Subject{detectors.SubjectIPDevice, detectors.SubjectBrowser, detectors.SubjectScript} {
		if s.Device() {
			t.Errorf("%v.Device() = true", s)
		}
	}
	if !detectors.SubjectDevice.Device() {
		t.Error("SubjectDevice.Device() = false")
	}
}

func TestSubjectOfAllocs(t *testing.T) {
	var ev schemas.Event
	ev.IDMethod = schemas.IDClientIP
	ev.SetText(&ev.Firmware, []byte("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"))
	if n := testing.AllocsPerRun(100, func() { detectors.SubjectOf(&ev) }); n != 0 {
		t.Errorf("SubjectOf allocates %v times", n)
	}
}
