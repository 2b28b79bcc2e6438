package eval

import (
	"bytes"
	"slices"
	"time"
)

// Signature is the yardstick of `eval web`: a simple, transparent signature
// tool of the kind a web server's operator runs (CrowdSec's HTTP scenarios,
// fail2ban jails), reading the raw NGINX combined lines. It knows nothing of
// devices or baselines; an address is flagged (and, as such tools do, banned)
// the first time one of its rules holds:
//
//   - probes: SignatureProbes requests for known-bad paths or payloads
//     (KnownBadRequest) within SignatureProbeWindow;
//   - brute force: SignatureAuthFailures 401/403 answers to a POST within
//     SignatureAuthWindow;
//   - probing: SignatureNotFound 400/403/404 answers within
//     SignatureNotFoundWindow that are at least half of the address's
//     requests in it;
//   - flood: SignatureFlood requests within one minute.
type Signature struct {
	ips map[string]*sigIP
}

// Rules of Signature.
const (
	SignatureProbes         = 5
	SignatureProbeWindow    = 10 * time.Minute
	SignatureAuthFailures   = 10
	SignatureAuthWindow     = 5 * time.Minute
	SignatureNotFound       = 20
	SignatureNotFoundWindow = 5 * time.Minute
	SignatureFlood          = 1000
)

// Rule names of Signature.
const (
	SigProbe = "known_bad_request"
	SigBrute = "auth_bruteforce"
	SigScan  = "not_found_probing"
	SigFlood = "flood"
)

type sigIP struct {
	probes, auth, notFound, all []int64 // event times (ns) within each rule's window
	first                       time.Time
	rule                        string
}

// NewSignature returns an empty signature tool.
func NewSignature() *Signature { return &Signature{ips: map[string]*sigIP{}} }

// Flagged returns when each flagged address was first flagged, and by which rule.
func (s *Signature) Flagged() map[string]SignatureHit {
	out := map[string]SignatureHit{}
	for ip, st := range s.ips {
		if st.rule != "" {
			out[ip] = SignatureHit{Time: st.first, Rule: st.rule}
		}
	}
	return out
}

// SignatureHit is an address's first flag.
type SignatureHit struct {
	Time time.Time
	Rule string
}

// Observe reads one combined-format line; lines it cannot read are ignored.
func (s *Signature) Observe(line []byte, t time.Time) {
	sp := bytes.IndexByte(line, ' ')
	q1 := bytes.IndexByte(line, '"')
	if sp <= 0 || q1 < 0 {
		return
	}
	rest := line[q1+1:]
	q2 := bytes.IndexByte(rest, '"')
	if q2 < 0 || len(rest) < q2+5 {
		return
	}
	request, after := rest[:q2], rest[q2+2:]
	method, path, _ := bytes.Cut(request, []byte{' '})
	path, _, _ = bytes.Cut(path, []byte{' '})
	status := 0
	if len(after) >= 3 {
		status = int(after[0]-'0')*100 + int(after[1]-'0')*10 + int(after[2]-'0')
	}
	ip := string(line[:sp])
	st := s.ips[ip]
	if st == nil {
		st = &sigIP{}
		s.ips[ip] = st
	}
	if st.rule != "" {
		return // banned: the tool has acted on it
	}
	now := t.UnixNano()
	flag := func(rule string) {
		st.rule, st.first = rule, t
		st.probes, st.auth, st.notFound, st.all = nil, nil, nil, nil
	}
	st.all = window(append(st.all, now), now, int64(max(time.Minute, SignatureNotFoundWindow)))
	if KnownBadRequest(path) {
		if st.probes = window(append(st.probes, now), now, int64(SignatureProbeWindow)); len(st.probes) >= SignatureProbes {
			flag(SigProbe)
			return
		}
	}
	if (status == 401 || status == 403) && string(method) == "POST" {
		if st.auth = window(append(st.auth, now), now, int64(SignatureAuthWindow)); len(st.auth) >= SignatureAuthFailures {
			flag(SigBrute)
			return
		}
	}
	if status == 400 || status == 403 || status == 404 {
		st.notFound = window(append(st.notFound, now), now, int64(SignatureNotFoundWindow))
		inWindow := count(st.all, now, int64(SignatureNotFoundWindow))
		if len(st.notFound) >= SignatureNotFound && 2*len(st.notFound) >= inWindow {
			flag(SigScan)
			return
		}
	}
	if n := count(st.all, now, int64(time.Minute)); n >= SignatureFlood {
		flag(SigFlood)
	}
}

// window drops the times older than span before now (times are in order),
// returning the rest; it reuses ts's array.
func window(ts []int64, now, span int64) []int64 {
	i := 0
	for i < len(ts) && ts[i] <= now-span {
		i++
	}
	if i == 0 {
		return ts
	}
	return append(ts[:0], ts[i:]...)
}

// count returns how many of ts (in order) are within span before now.
func count(ts []int64, now, span int64) int {
	i, _ := slices.BinarySearch(ts, now-span+1)
	return len(ts) - i
}

// knownBad lists the substrings of known-bad requests: sensitive files,
// admin panels of software the site does not run, and injection and
// traversal payloads, lower case.
var knownBad = [][]byte{
	[]byte("/.env"), []byte("/.git"), []byte("/.svn"), []byte("/.aws"), []byte(".ds_store"), []byte("wp-login"), []byte("wp-admin"),
	[]byte("wp-content"), []byte("xmlrpc.php"), []byte("phpmyadmin"), []byte("/pma/"), []byte("phpunit"), []byte("/cgi-bin/"),
	[]byte("/boaform"), []byte("/hnap1"), []byte("/server-status"), []byte("/actuator"), []byte("web.config"), []byte(".sql"),
	[]byte("/backup"), []byte("/manager/html"), []byte("/solr/"), []byte("eval-stdin"), []byte("shell.php"), []byte("/owa/"),
	[]byte("../"), []byte("..%2f"), []byte("%2e%2e"), []byte("etc/passwd"), []byte("etc/shadow"), []byte("php://"),
	[]byte("union%20select"), []byte("union+select"), []byte("%27%20or"), []byte("%27%20and"), []byte("sleep("),
	[]byte("drop%20table"), []byte("%3cscript"), []byte("or%201=1"),
}

// KnownBadRequest reports whether a raw request path matches a known-bad
// signature (knownBad, case-insensitive).
func KnownBadRequest(path []byte) bool {
	var buf [512]byte
	n := copy(buf[:], path)
	low := buf[:n]
	for i, c := range low {
		if c >= 'A' && c <= 'Z' {
			low[i] = c + 'a' - 'A'
		}
	}
	for _, p := range knownBad {
		if bytes.Contains(low, p) {
			return true
		}
	}
	return false
}
