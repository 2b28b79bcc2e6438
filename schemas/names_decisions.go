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

// Decision scopes: what an enforcement point matches on. A scope and value
// mean one thing to every enforcement point: each scope is one identity
// namespace, and an enforcement point that cannot see a scope's identity
// acknowledges its decisions as ReceiptNotApplicable instead of enforcing
// them (see Scopes).
const (
	// ScopeDevice is a device id as an HTTP gateway presents it: the device
	// header (X-Device-Id, HeaderDeviceID), which the gateway fills from the
	// client certificate's subject or the authenticated principal where the
	// device is identified that way. Only sources identified by a header,
	// certificate or token yield it; MQTT identities have their own scopes,
	// so a device=X decision never blocks an MQTT client X, nor the reverse.
	ScopeDevice = "device"
	// ScopeAPIKey is an API key as the pipeline stores it: the keyed hash of
	// a key found in clear (HMAC-SHA256 with --key-secret-file, 16 hex
	// digits; enforce http hashes the X-Api-Key it sees alike), or the key id
	// a gateway logs (a Kong credential id).
	ScopeAPIKey = "api_key"
	// ScopeMQTTUsername is the username an MQTT client logged in with.
	ScopeMQTTUsername = "mqtt_username"
	// ScopeMQTTClientID is an MQTT client id.
	ScopeMQTTClientID = "mqtt_client_id"
	// ScopeIP is a client address (an ip decision may also hold a CIDR, as
	// before ScopeCIDR existed; enforcement points accept both).
	ScopeIP = "ip"
	// ScopeCIDR is a network of client addresses ("198.51.100.0/24").
	ScopeCIDR = "cidr"
	// ScopeTenant is a tenant, as the tenant header (HeaderTenantID) or the
	// source's configuration names it.
	ScopeTenant = "tenant"
)

// Scopes returns every decision scope, in a fixed order.
func Scopes() []string {
	return []string{ScopeDevice, ScopeAPIKey, ScopeMQTTUsername, ScopeMQTTClientID, ScopeIP, ScopeCIDR, ScopeTenant}
}

// ValidScope reports whether s is one of Scopes.
func ValidScope(s string) bool {
	switch s {
	case ScopeDevice, ScopeAPIKey, ScopeMQTTUsername, ScopeMQTTClientID, ScopeIP, ScopeCIDR, ScopeTenant:
		return true
	}
	return false
}

// Receipt results (ApplyReceipt.Result): what an enforcement point did with
// a decision. A receipt without a result (from an enforcement point older
// than results) means ReceiptApplied.
const (
	// ReceiptApplied: the enforcement point enforces the decision (or, for an
	// unblock, stopped enforcing the lifted decision).
	ReceiptApplied = "applied"
	// ReceiptNotApplicable: the enforcement point cannot match the
	// decision's scope or action and does not enforce it; it is not retried.
	ReceiptNotApplicable = "not_applicable"
	// ReceiptFailed: the enforcement point tried and failed (a broker refused
	// or could not be reached); it keeps trying, and a later receipt says
	// ReceiptApplied when it succeeds.
	ReceiptFailed = "failed"
)

// Receipt reasons (ApplyReceipt.Reason), why a receipt is not applied;
// ApplyReceipt.Detail says more in words.
const (
	// ReceiptReasonScope: the enforcement point cannot see the identity the
	// decision's scope names (an MQTT username at an HTTP gateway, an API key
	// at a broker).
	ReceiptReasonScope = "scope_not_enforceable"
	// ReceiptReasonAction: the enforcement point cannot carry out the
	// decision's action (a throttle at a broker).
	ReceiptReasonAction = "action_not_supported"
	// ReceiptReasonRefused: the enforced system refused the command (an
	// unknown username at the broker).
	ReceiptReasonRefused = "refused"
	// ReceiptReasonUnreachable: the enforced system could not be reached.
	ReceiptReasonUnreachable = "unreachable"
)

// Receipt verification statuses (ColVerification, and the label of
// MetricReceiptsVerified): whether the pipeline could check that a receipt
// comes from the enforcement point it names (VerifyReceipt). Only
// ReceiptVerified and ReceiptUnverified receipts are stored in the receipts
// table; the others are forged or broken and go to the rejected receipts
// table, never counted as applied.
const (
	// ReceiptVerified: signed by a trusted key of the enforcement point it names.
	ReceiptVerified = "verified"
	// ReceiptUnverified: stored without a check, because the pipeline has no
	// enforcement point keys (--enforcer-keys): anyone who can publish on
	// SubjectDecisionsApplied could have written it.
	ReceiptUnverified = "unverified"
	// ReceiptUnsigned: no signature, while enforcement point keys are configured.
	ReceiptUnsigned = "unsigned"
	// ReceiptMalformedSignature: a signature that does not parse.
	ReceiptMalformedSignature = "malformed_signature"
	// ReceiptWrongEnforcer: signed with the key of another enforcement point
	// than the one the receipt names.
	ReceiptWrongEnforcer = "wrong_enforcer"
	// ReceiptUnknownKey: signed with a key id the pipeline does not trust.
	ReceiptUnknownKey = "unknown_key"
	// ReceiptBadSignature: the signature does not match the receipt (a field
	// was changed, or another key signed under the trusted key id).
	ReceiptBadSignature = "bad_signature"
)

// ReceiptVerifications returns every receipt verification status, verified
// and unverified first.
func ReceiptVerifications() []string {
	return []string{ReceiptVerified, ReceiptUnverified, ReceiptUnsigned, ReceiptMalformedSignature,
		ReceiptWrongEnforcer, ReceiptUnknownKey, ReceiptBadSignature}
}

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
	// ReasonBlockedDeviceAddress is the extra reason of an alert whose
	// address block was withheld: its refused connections name no identity
	// stronger than an MQTT client id or the address, and come from the
	// address of a device under an active block, whose retries they are
	// taken for (a blocked device's reconnect loop must not block everyone
	// behind its address).
	ReasonBlockedDeviceAddress = "blocked_device_address"
	// ReasonAnalystUnblock prefixes the reason of an unblock issued by an
	// analyst with `iotwatch unblock` ("analyst: <text>").
	ReasonAnalystUnblock = "analyst"
)
