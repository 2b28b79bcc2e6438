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

// Score enriches ev from the GeoIP database (as the pipeline does), scores it,
// and passes to emit what follows from it, in the pipeline's order: the
// event's own alert and decision (when either is set), the alerts the block
// limiter released, its entities' alerts and decisions (client IP and prefix,
// API key), and, once a minute of event time has passed since the last
// sweep (worker.SweepDue), each silent device's. Alerts passed to emit are
// valid until it returns. It returns the silences found.
func (st *ReplayStack) Score(ev *schemas.Event, sc *schemas.Scored, emit func(*schemas.Alert, *schemas.Decision)) int {
	st.stack.Enrich(ev)
	if alert, d := st.w.Process(ev, sc); alert != nil || d != nil {
		emit(alert, d)
	}
	st.released(emit)
	st.stack.ObserveEntities(ev, emit)
	st.released(emit)
	now, ok := st.w.SweepDue()
	if !ok {
		return 0
	}
	n := st.w.Sweep(now, func(_ *schemas.Event, _ *schemas.Scored, alert *schemas.Alert, d *schemas.Decision) {
		if alert != nil || d != nil {
			emit(alert, d)
		}
	})
	st.released(emit)
	return n
}

// released passes emit the alerts the block limiter released.
func (st *ReplayStack) released(emit func(*schemas.Alert, *schemas.Decision)) {
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
