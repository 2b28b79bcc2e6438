package schemas

// HTTP headers of the enforcement point's forward-auth endpoint
// (`iotwatch enforce http`).
const (
	// Request headers read by default.
	HeaderDeviceID = "X-Device-Id"
	HeaderAPIKey   = "X-Api-Key"
	HeaderTenantID = "X-Tenant-Id"
	// Response headers of a denied (or throttled) check.
	HeaderEnforceAction   = "X-Iotwatch-Action"   // block or throttle
	HeaderEnforceScope    = "X-Iotwatch-Scope"    // device, api_key, ip or tenant
	HeaderEnforceDecision = "X-Iotwatch-Decision" // the decision id
)
