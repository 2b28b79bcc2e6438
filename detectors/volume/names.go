package volume

// Name is the volume detector's registered name. It and the reasons below are
// user-facing (findings, alerts, ClickHouse rows, dashboards): renaming one is
// a migration.
const Name = "volume"

// Reasons the volume detector returns.
const (
	ReasonRateSpike     = "rate_spike"      // request rate far above the device's own baseline
	ReasonAuthFailures  = "auth_failures"   // authentication failures far above the baseline
	ReasonErrorBurst    = "error_burst"     // 4xx/5xx responses far above the baseline
	ReasonBytesOutSpike = "bytes_out_spike" // many responses far larger than the device's typical size within minutes, at a normal request rate (bulk reads)
	ReasonBytesOutDrift = "bytes_out_drift" // the mean response size per 5-minute bucket drifting above the device's daily-cycle baseline (gradual exfiltration)
	ReasonFleetErrors   = "fleet_errors"    // an error burst, or the rate spike of retries, while the device's class fails at once (a backend incident; recorded, never alerts alone)
	ReasonSilence       = "silence"         // the device came back after a gap far longer than its usual inter-arrival time (recorded, never alerts alone)
)
