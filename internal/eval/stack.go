package eval

import (
	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// ReplayStack is the in-process scoring stack that replay and eval attacks
// use: the pipeline's own (score.New, from the same configuration) with one
// worker, so that replay cannot drift from the live path.
type ReplayStack struct {
	stack   *score.Stack
	w       *worker.Worker
	limiter *decide.Limiter
	capped  []schemas.Alert // process's buffer of the limiter's alerts
}

// Process enriches ev from the GeoIP database (as the pipeline does), scores
// it and returns its alert and decision (either may be nil) and the alerts
// the block limiter released, which are valid until the next call.
func (st *ReplayStack) Process(ev *schemas.Event, sc *schemas.Scored) (*schemas.Alert, *schemas.Decision, []schemas.Alert) {
	st.stack.Enrich(ev)
	alert, d := st.w.Process(ev, sc)
	st.capped = st.limiter.AppendAlerts(st.capped[:0])
	return alert, d, st.capped
}

// Entities judges ev's entities (its client IP and prefix, its API key: the
// pipeline's entity stage) and passes their alerts and decisions to emit, then
// the alerts the block limiter released. Call it for every event, after
// Process.
func (st *ReplayStack) Entities(ev *schemas.Event, emit func(*schemas.Alert, *schemas.Decision)) {
	st.stack.ObserveEntities(ev, emit)
	st.capped = st.limiter.AppendAlerts(st.capped[:0])
	for i := range st.capped {
		emit(&st.capped[i], nil)
	}
}

// Model returns the stack's class model (read-only for callers).
func (st *ReplayStack) Model() *detectors.ClassModel { return st.stack.Model }

// NewReplayStack builds the stack of cfg's detectors, worker and decision
// settings, with cfg.GeoIP (nil: none). An error in the detector list or the
// decision settings is a config.UsageError.
func NewReplayStack(cfg pipeline.Config) (*ReplayStack, error) {
	sc := cfg.ScoreConfig()
	sc.Workers = 1
	s, err := score.New(sc)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	return &ReplayStack{stack: s, w: s.Workers[0], limiter: s.Limiter}, nil
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
