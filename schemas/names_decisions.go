package schemas

// Severities (alert subjects are iotwatch.alerts.<severity>).
const (
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// Decision actions (decision subjects are iotwatch.decisions.<action>).
// A dry-run decision is published with action DryRunBlock and never enters the KV bucket.
const (
	ActionBlock       = "block"
	ActionThrottle    = "throttle"
	ActionUnblock     = "unblock"
	ActionDryRunBlock = "would_block"
)

// Decision scopes: what an enforcement point matches on.
const (
	ScopeDevice = "device"
	ScopeAPIKey = "api_key"
	ScopeIP     = "ip"
	ScopeTenant = "tenant"
)

// UnblockIDSuffix ends the id of an unblock that names the decision it lifts:
// UnblockID(id) is id + UnblockIDSuffix.
const UnblockIDSuffix = "/unblock"

// Reasons. Detector names and the reasons of their findings are declared in
// each detector's own package (volume.Name, volume.ReasonRateSpike, ...) and
// registered with detectors.Register: the registry is their one source of
// truth. The reasons here are the pipeline's own, for alerts and decisions no
// detector made; no detector may declare one of them.
const (
	// ReasonNone is the reason of a finding with no reason (score 0).
	ReasonNone = ""
	// ReasonAllowlisted is the reason of an unblock that lifts an active block
	// because the allowlist now covers its scope and value.
	ReasonAllowlisted = "allowlisted"
	// ReasonBlockCapHit names the fleet alert raised once per minute when the
	// per-minute cap on new blocks refuses its first block, and the extra reason
	// of each alert whose block the cap refused.
	ReasonBlockCapHit = "block_cap_hit"
	// ReasonAnalystUnblock prefixes the reason of an unblock issued by an
	// analyst with `iotwatch unblock` ("analyst: <text>").
	ReasonAnalystUnblock = "analyst"
)
