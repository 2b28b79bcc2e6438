package eval

import (
	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// replayStack is the in-process scoring stack that replay uses: one worker
// over the configured detectors, its class table, and the decision engine
// with its block limiter.
type ReplayStack struct {
	w       *worker.Worker
	limiter *decide.Limiter
	fleet   *detectors.ClassTable
	geo     *geoip.Reader   // fills what log lines lack, as the pipeline does (nil: none)
	capped  []schemas.Alert // process's buffer of the limiter's alerts
}

// Process enriches ev from the GeoIP database, scores it and returns its
// alert and decision (either may be nil) and the alerts the block limiter
// released, which are valid until the next call.
func (st *ReplayStack) Process(ev *schemas.Event, sc *schemas.Scored) (*schemas.Alert, *schemas.Decision, []schemas.Alert) {
	if st.geo != nil {
		st.geo.Enrich(ev)
	}
	alert, d := st.w.Process(ev, sc)
	st.capped = st.limiter.AppendAlerts(st.capped[:0])
	return alert, d, st.capped
}

// NewReplayStack builds the stack of cfg's detectors, worker and decision
// settings, with cfg.GeoIP (nil: none). An error in the detector list or the
// decision settings is a config.UsageError.
func NewReplayStack(cfg pipeline.Config) (*ReplayStack, error) {
	layout, err := worker.NewLayout(cfg.Detectors)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	limiter := decide.NewLimiter(cfg.Decide.MaxBlocksPerMinute)
	eng, err := decide.NewEngine(cfg.Decide, limiter)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	fleet := detectors.NewClassTable(1<<18, 1<<12)
	w, err := worker.New(layout, cfg.Worker, fleet, eng)
	if err != nil {
		return nil, err
	}
	return &ReplayStack{w: w, limiter: limiter, fleet: fleet, geo: cfg.GeoIP}, nil
}

// Sweep runs the worker's silence sweep when a minute of event time has
// passed since the last one (worker.SweepDue), as the live pipeline does
// after each event, and passes emit each silent device's alert and decision
// (nil when none: a silence alone scores below the alert threshold), then the
// alerts the block limiter released. It returns the silences found.
func (st *ReplayStack) Sweep(emit func(*schemas.Alert, *schemas.Decision)) int {
	now, ok := st.w.SweepDue()
	if !ok {
		return 0
	}
	n := st.w.Sweep(now, func(_ *schemas.Event, _ *schemas.Scored, alert *schemas.Alert, d *schemas.Decision) {
		emit(alert, d)
	})
	st.capped = st.limiter.AppendAlerts(st.capped[:0])
	for i := range st.capped {
		emit(&st.capped[i], nil)
	}
	return n
}
