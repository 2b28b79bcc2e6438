package detectors

import "github.com/iotwatch/iotwatch/schemas"

// Subject is what kind of client an event's identity is. Only a device
// identity has a baseline worth judging against; every other client is
// judged by absolute findings alone (Absolute), and a block on it needs one
// (package decide). The rule, by how the source identified the client
// (ev.IDMethod) and its user agent (for an HTTP request ev.Firmware holds the
// User-Agent, UserAgentFamily):
//
//	certificate, API key, MQTT client id or user name   SubjectDevice, whatever the user agent (a stolen key
//	                                                    used from a script is still the device's key)
//	token or HTTP user name (a principal)               SubjectDevice when the user agent is a device's
//	                                                    (SubjectIPDevice family), else its family: a person's
//	                                                    browser login, a service account's script
//	client address only                                 the user agent's family, SubjectIPDevice included:
//	                                                    an address may be a NAT of a household, an office
//	                                                    or a gateway's devices, so no identity to baseline
type Subject uint8

// Subjects.
const (
	// SubjectDevice: a device its source identified.
	SubjectDevice Subject = iota
	// SubjectIPDevice: an address whose user agent is none of the families
	// below (a device's firmware string, an SDK, or none): one device or a
	// gateway of many behind one address.
	SubjectIPDevice
	// SubjectBrowser: a web browser (a "Mozilla/" user agent naming no
	// crawler): people, whose page loads are bursts by nature.
	SubjectBrowser
	// SubjectCrawler: a search engine or SEO crawler ("bot", "crawler",
	// "spider" in its user agent).
	SubjectCrawler
	// SubjectScript: an HTTP library or command-line tool (python-requests,
	// Go-http-client, curl, okhttp, axios, ...): integrations and scripts,
	// which run scheduled jobs in bursts.
	SubjectScript
	// SubjectMonitor: an uptime monitor or health probe.
	SubjectMonitor
)

var subjectNames = [...]string{"device", "ip_device", "browser", "crawler", "script", "monitor"}

// String returns the subject's snake_case name.
func (s Subject) String() string {
	if int(s) < len(subjectNames) {
		return subjectNames[s]
	}
	return "unknown"
}

// Device reports whether the subject is a device identity, judged by every
// finding; any other subject is judged by absolute findings alone.
func (s Subject) Device() bool { return s == SubjectDevice }

// SubjectOf classifies ev's identity (see Subject). It does not allocate.
func SubjectOf(ev *schemas.Event) Subject {
	switch ev.IDMethod {
	case schemas.IDClientIP:
		return UserAgentFamily(ev.Firmware)
	case schemas.IDToken:
		if f := UserAgentFamily(ev.Firmware); f != SubjectIPDevice {
			return f
		}
	}
	return SubjectDevice
}

// UserAgentFamily classifies a User-Agent string: SubjectBrowser,
// SubjectCrawler, SubjectScript, SubjectMonitor, or SubjectIPDevice for
// anything else (a firmware string, an empty one). Monitors are recognised
// first (some announce themselves as a browser), then crawlers, then
// scripts, then browsers. It does not allocate.
func UserAgentFamily(ua []byte) Subject {
	switch {
	case len(ua) == 0:
		return SubjectIPDevice
	case containsAny(ua, monitorTokens):
		return SubjectMonitor
	case containsAny(ua, crawlerTokens):
		return SubjectCrawler
	case containsAny(ua, scriptTokens):
		return SubjectScript
	case hasPrefixFold(ua, "mozilla/") || hasPrefixFold(ua, "opera/"):
		return SubjectBrowser
	}
	return SubjectIPDevice
}

// Tokens of user-agent families, lower case.
var (
	monitorTokens = []string{"uptimerobot", "pingdom", "uptime", "statuscake", "site24x7", "kube-probe", "blackbox exporter",
		"elb-healthchecker", "googlehc", "health", "monitor", "nagios", "zabbix", "datadog synthetics"}
	crawlerTokens = []string{"bot", "crawler", "spider", "slurp", "facebookexternalhit", "archiver", "mediapartners"}
	scriptTokens  = []string{"python-requests", "python-urllib", "aiohttp", "httpx", "go-http-client", "curl/", "wget/", "okhttp",
		"axios", "node-fetch", "undici", "java/", "apache-httpclient", "libwww-perl", "ruby", "guzzle", "restsharp",
		"postmanruntime", "insomnia", "powershell", "zapier", "http.rb", "reqwest", "dart:io", "scrapy"}
)

func containsAny(b []byte, tokens []string) bool {
	for _, t := range tokens {
		if containsFold(b, t) {
			return true
		}
	}
	return false
}

// containsFold reports whether b contains t (lower case) ignoring ASCII case.
func containsFold(b []byte, t string) bool {
	for i := 0; i+len(t) <= len(b); i++ {
		if hasPrefixFold(b[i:], t) {
			return true
		}
	}
	return false
}

func hasPrefixFold(b []byte, t string) bool {
	if len(b) < len(t) {
		return false
	}
	for j := 0; j < len(t); j++ {
		c := b[j]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != t[j] {
			return false
		}
	}
	return true
}

// absolute holds every registered reason declared Absolute (Spec.Absolute).
// Register fills it from init functions; it is only read afterwards.
var absolute = map[string]bool{}

// Absolute reports whether a reason is absolute evidence (Spec.Absolute):
// judged against fixed bounds that no benign client of any kind reaches,
// not against the identity's own baseline, so that it stands for a client
// that is no device identity (Subject.Device). It does not allocate.
func Absolute(reason string) bool { return absolute[reason] }
