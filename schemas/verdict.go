package schemas

// Verdict is the enforcement point's own answer to a request, when its log
// carries it (the auth subrequest's status and the iotwatch action header for
// NGINX auth_request, Envoy ext_authz, Traefik forwardAuth). An enforced deny
// or an enforcer outage is not the device's behaviour.
//
// A minimal version with main's names (VerdictNone, VerdictAllowed,
// VerdictDenied, VerdictUnavailable) for the decoders to set: on merge, main's
// definition in event.go replaces this file.
type Verdict uint8

const (
	// VerdictNone: the log does not say (no enforcement point in front,
	// or a config that does not log it).
	VerdictNone Verdict = iota
	// VerdictAllowed: the enforcement point asked and was told to allow.
	VerdictAllowed
	// VerdictDenied: denied by an iotwatch decision (403 with X-Iotwatch-Action).
	VerdictDenied
	// VerdictUnavailable: the enforcer did not answer (the auth subrequest
	// failed: 500, 502, 503, 504), so the gateway answered for it.
	VerdictUnavailable
)

var verdictNames = [...]string{"none", "allowed", "denied", "enforcer_unavailable"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "none"
}
