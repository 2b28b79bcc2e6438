package schemas

// Signed unblocks and per-key TTL of the bucket of active blocks (issue 5,
// decision semantics between the pipeline and enforcement points).
const (
	// UnblockIDSuffix ends the id of an unblock that names the decision it
	// lifts: UnblockID(id) is id + UnblockIDSuffix.
	UnblockIDSuffix = "/unblock"
	// ReasonAnalystUnblock prefixes the reason of an unblock issued by an
	// analyst with `iotwatch unblock` ("analyst: <text>").
	ReasonAnalystUnblock = "analyst"
	// MetricEnforceIgnoredDeletes counts KV deletes and purges of an enforced
	// decision that an enforcement point requiring signatures did not act on.
	MetricEnforceIgnoredDeletes = "iotwatch_enforce_ignored_deletes_total"
)
