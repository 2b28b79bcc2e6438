// Package score assembles the in-process scoring stack, in one place for
// every path that scores events: the live pipeline ('iotwatch run' and the
// demo), 'iotwatch replay', 'iotwatch eval attacks' and the golden-scenario
// runner (detectors/scenario). Built here, they cannot drift apart: the same
// record layout from the same detector names, the same class table, the same
// decision engine configuration, the same GeoIP enrichment.
//
// A Stack is the record layout of the enabled detectors, one class table
// (class and fleet statistics, shared by the workers: it counts distinct
// devices), one block limiter (the per-minute cap on new blocks, shared by
// the workers' decision engines), and N workers, each with its own state table
// and decision engine. Each worker is driven by one goroutine (see package
// worker); the class table and the limiter are safe for concurrent use.
package score

import (
	"time"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// Class table sizes of the live path (detectors.NewClassTable).
const (
	// ClassCommands is the number of (class, command) pairs, and as many
	// transitions, the class table holds by default.
	ClassCommands = 1 << 18
	// Classes is the number of classes the class table holds by default.
	Classes = 1 << 12
)

// DefaultIdleTTL is how long a silent device keeps its record by default
// (event time).
const DefaultIdleTTL = 7 * 24 * time.Hour

// Config of a scoring stack. Zero values take the documented defaults.
type Config struct {
	// Detectors to enable, by name (default: all registered). The record
	// layout follows the order given.
	Detectors []string
	// Workers is the number of workers (shards), default 1.
	Workers int
	// Worker configures each worker's state table; IdleTTL defaults to
	// DefaultIdleTTL.
	Worker worker.Config
	// Decide configures every worker's decision engine; with both thresholds
	// zero, decide.DefaultConfig() is used.
	Decide decide.Config
	// ClassCommands and Classes size the class table (defaults: the constants
	// of the same names). They bound capacity, not behaviour, as long as the
	// table is not full.
	ClassCommands, Classes int
	// GeoIP, when set, fills country, ASN and coordinates that a log line
	// lacks (Enrich), from a MaxMind-format database.
	GeoIP *geoip.Reader
	// Entities configures the entity owners (client IPs and their
	// prefixes, package entity); EntityOwners is their number (default:
	// Workers). Each owner has its own decision engine with Decide and the
	// shared limiter.
	Entities     entity.Config
	EntityOwners int
	// BlockBudget, when set, counts the new blocks of Decide.MaxBlocksPerMinute
	// (decide.NewBudgetLimiter): a budget shared by a cluster's instances
	// (package cluster). Nil counts them in this process (decide.NewLimiter),
	// as replay and evaluation do.
	BlockBudget decide.Budget
}

// Stack is the in-process scoring stack. Its fields are set by New and Reset
// and must not be replaced by callers.
type Stack struct {
	Layout  *worker.Layout
	Model   *detectors.ClassModel // the class table and every detector's class statistics
	Limiter *decide.Limiter
	// Allowlist is the allowlist of every engine (workers' and entity
	// owners'), from Decide.Allowlist; a caller may Store another one
	// (cluster.WatchAllowlist) while the engines run.
	Allowlist *decide.AllowlistRef
	// FreshLimiter is the entity owners' second budget, for blocks of fresh
	// addresses (decide.Entity.Fresh: a botnet wave's bots).
	FreshLimiter *decide.FreshLimiter
	// Calibration maps scores to estimated false-alarm rates for every
	// worker's engine (decide.Config.AlertBudget); replaced by Reset. The
	// entity owners' engines alert by the fixed threshold: the calibration
	// counts device-hours.
	Calibration *decide.Calibration
	Workers     []*worker.Worker
	// Owners judge the entities (package entity), one goroutine each.
	Owners []*entity.Owner
	geo    *geoip.Reader
	cfg    Config
}

// New checks cfg and builds a stack with fresh (empty) state. Errors are
// configuration errors: an unknown detector, an invalid decision or state
// table configuration.
func New(cfg Config) (*Stack, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if cfg.Worker.IdleTTL <= 0 {
		cfg.Worker.IdleTTL = DefaultIdleTTL
	}
	if cfg.Decide.AlertThreshold == 0 && cfg.Decide.BlockThreshold == 0 {
		now := cfg.Decide.Now
		cfg.Decide = decide.DefaultConfig()
		cfg.Decide.Now = now
	}
	if cfg.ClassCommands <= 0 {
		cfg.ClassCommands = ClassCommands
	}
	if cfg.Classes <= 0 {
		cfg.Classes = Classes
	}
	if cfg.EntityOwners <= 0 {
		cfg.EntityOwners = cfg.Workers
	}
	layout, err := worker.NewLayout(cfg.Detectors)
	if err != nil {
		return nil, err
	}
	allow, err := decide.ParseAllowlist(cfg.Decide.Allowlist)
	if err != nil {
		return nil, &decide.FieldError{Config: "decide", Field: "allowlist", Err: err}
	}
	s := &Stack{Layout: layout, Limiter: decide.NewLimiter(cfg.Decide.MaxBlocksPerMinute), Allowlist: decide.NewAllowlistRef(allow),
		FreshLimiter: decide.NewFreshLimiter(cfg.Decide.MaxFreshBlocksPerMinute), geo: cfg.GeoIP, cfg: cfg}
	if cfg.BlockBudget != nil {
		s.Limiter = decide.NewBudgetLimiter(cfg.Decide.MaxBlocksPerMinute, cfg.BlockBudget)
	}
	if err := s.Reset(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reset replaces the class table, the workers (their state tables and
// decision engines) and the entity owners with fresh ones: a cold start. The layout, the block
// limiter and the allowlist are kept. The previous workers must no longer be in use.
func (s *Stack) Reset() error {
	model := detectors.NewClassModel(s.Layout.Detectors, detectors.NewClassTable(s.cfg.ClassCommands, s.cfg.Classes))
	cal := decide.NewCalibration(s.cfg.Decide.AlertBudget)
	workers := make([]*worker.Worker, 0, s.cfg.Workers)
	for range s.cfg.Workers {
		eng, err := decide.NewEngine(s.cfg.Decide, s.Limiter)
		if err != nil {
			return err // decide's own "cannot use decide config: ..."
		}
		eng.UseCalibration(cal)
		eng.UseAllowlist(s.Allowlist)
		w, err := worker.New(s.Layout, s.cfg.Worker, model, eng)
		if err != nil {
			return err // the state table's own "cannot create state table: ..."
		}
		workers = append(workers, w)
	}
	owners := make([]*entity.Owner, 0, s.cfg.EntityOwners)
	start := new(entity.Start)
	for range s.cfg.EntityOwners {
		eng, err := decide.NewEngine(s.cfg.Decide, s.Limiter)
		if err != nil {
			return err
		}
		eng.UseAllowlist(s.Allowlist)
		eng.UseFreshLimiter(s.FreshLimiter)
		ec := s.cfg.Entities
		ec.SkipBlocked = ec.SkipBlocked || s.cfg.Worker.SkipBlocked
		o, err := entity.NewOwner(ec, s.cfg.EntityOwners, eng)
		if err != nil {
			return err
		}
		o.ShareStart(start)
		if s.geo != nil {
			o.NameAS(s.geo.ASOrg)
		}
		owners = append(owners, o)
	}
	s.Model, s.Workers, s.Owners, s.Calibration = model, workers, owners, cal
	return nil
}

// Enrich fills what ev lacks from the GeoIP database, if the stack has one,
// as every path does before an event reaches its worker (see geoip.Reader.Enrich).
func (s *Stack) Enrich(ev *schemas.Event) {
	if s.geo != nil {
		s.geo.Enrich(ev)
	}
}

// ObserveEntities hands ev's entity observations (its client IP and prefix;
// its API key) to the owners of its entities, which judges them and passes their alerts
// and decisions to emit: what the pipeline's entity stage does for every
// event, for paths that score in one goroutine (replay, evaluation). Like a
// worker, an owner must be driven by one goroutine at a time. Call it for
// every event, in stream order, next to the event's worker.
func (s *Stack) ObserveEntities(ev *schemas.Event, emit entity.Emit) {
	if len(s.Owners) == 0 {
		return
	}
	if ob, ok := entity.ObsOf(ev); ok {
		s.Owners[entity.Shard(&ob, len(s.Owners))].Observe(&ob, emit)
	}
	if ob, ok := entity.KeyObsOf(ev); ok {
		s.Owners[entity.Shard(&ob, len(s.Owners))].Observe(&ob, emit)
	}
}
