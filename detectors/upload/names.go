package upload

// Name is the upload detector's registered name. It and the reasons below are
// user-facing (findings, alerts, ClickHouse rows, dashboards): renaming one is
// a migration.
const Name = "upload"

// Reasons the upload detector returns.
const (
	// ReasonBytesInBurst: the device uploaded far more in the last few
	// minutes than it ever does in as long (Observed: bytes in over the
	// 5-minute window; Expected: the device's, or its class's, usual most).
	ReasonBytesInBurst = "bytes_in_burst"
	// ReasonBytesInGrowth: the device's request size has stayed above its
	// baseline for long enough (a CUSUM over 5-minute buckets; Observed: the
	// closing bucket's mean request size in bytes; Expected: the baseline's).
	ReasonBytesInGrowth = "bytes_in_growth"
)
