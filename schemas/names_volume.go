package schemas

// Reason codes of the volume detector added for bytes out and silence (the
// first ones are in names.go).
const (
	ReasonBytesOutSpike = "bytes_out_spike" // many responses far larger than the device's typical size within minutes, at a normal request rate (bulk reads)
	ReasonBytesOutDrift = "bytes_out_drift" // the mean response size per 5-minute bucket drifting above the device's daily-cycle baseline (gradual exfiltration)
	ReasonSilence       = "silence"         // the device came back after a gap far longer than its usual inter-arrival time (recorded, never alerts alone)
)
