package schemas

// Metric names of the silence sweep (pipeline/worker, Worker.Sweep).
const (
	MetricSilencesSwept   = "iotwatch_silences_swept_total"   // silent devices the sweep reported while silent
	MetricSilencesUnnamed = "iotwatch_silences_unnamed_total" // silent devices the sweep could not name (identity not seen since start)
)
