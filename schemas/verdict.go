package schemas

// Verdict is the enforcement point's own answer to a request, when its log
// carries it (the auth subrequest's status and the iotwatch action header for
// NGINX auth_request, Envoy ext_authz, Traefik forwardAuth). An enforced deny
// or an enforcer outage is not the device's behaviour.
//
// This is the minimal version the decoders set; the worker's use of it (not
// scoring or learning enforced denies) belongs to the pipeline.
type Verdict uint8

const (
	// VerdictUnknown: the log does not say (no enforcement point in front,
	// or a config that does not log it).
	VerdictUnknown Verdict = iota
	// VerdictAllowed: the enforcement point asked and was told to allow.
	VerdictAllowed
	// VerdictDenied: denied by an iotwatch decision (403 with X-Iotwatch-Action).
	VerdictDenied
	// VerdictEnforcerDown: the enforcer did not answer (the auth subrequest
	// failed: 500, 502, 503, 504), so the gateway answered for it.
	VerdictEnforcerDown
)

var verdictNames = [...]string{"unknown", "allowed", "denied", "enforcer_down"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}
