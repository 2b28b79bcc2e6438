package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/s2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/detectors"
	"github.com/iotwatch/iotwatch/schemas"
)

// Defaults of ClassSyncConfig.
const (
	// DefaultClassSyncInterval is how often an instance publishes its class
	// contribution and merges the others'.
	DefaultClassSyncInterval = 10 * time.Second
	// DefaultClassSyncExpiry is how long a contribution that is not
	// rewritten (its instance stopped) is still merged: long enough for
	// the devices of the partitions it owned to be learned again by their
	// new owners (the sketches merged are of devices that ever did
	// something: a stale one holds true facts), short enough that a
	// removed deployment's classes fade within the hour.
	DefaultClassSyncExpiry = 30 * time.Minute
	// DefaultClassLag is how far in event time an event may be ahead of
	// what the merged class view covers and still be judged at once
	// (ClassSyncConfig.Lag): longer than two Intervals, so that in live
	// operation (event time about wall time) the periodic rounds keep the
	// view within it and nothing waits.
	DefaultClassLag = time.Minute
	// DefaultClassStall is how long (wall time) a partition's coverage may
	// stay unchanged while it holds the others back before it is ignored
	// (ClassSyncConfig.Stall): longer than a takeover (a pinned TTL and a
	// restore), so that a dead owner's partitions are waited for until
	// their new owner publishes, and no longer.
	DefaultClassStall = 30 * time.Second
	// DefaultClassAwait is how long a partition whose coverage stalled is
	// still waited for while ClassSyncConfig.Awaited says its owner may
	// yet move it (ClassSyncConfig.Await): longer than a takeover slowed
	// by a stream leader's election (58 s seen on a loaded 2-core box,
	// bench/RESULTS.md w4), shorter than pipeline.DefaultClassHoldMax, so
	// that one instance stuck for good costs the others one wait of it.
	DefaultClassAwait = 90 * time.Second
)

// ClassSyncConfig configures a ClassSync.
type ClassSyncConfig struct {
	// Store is the Object Store bucket of the contributions
	// (bus.EnsureClassStats).
	Store jetstream.ObjectStore
	// Instance names this instance's object (the partition owner's presence
	// key is a good choice); it must be unique among the live instances.
	Instance string
	// Interval between rounds (publish, then merge); default
	// DefaultClassSyncInterval.
	Interval time.Duration
	// Expiry: a contribution whose object was last written longer ago is
	// not merged; default DefaultClassSyncExpiry.
	Expiry time.Duration
	// Log receives a warning for a round that fails; nil discards.
	Log *slog.Logger
	// Now is the clock (default time.Now), for tests.
	Now func() time.Time

	// Partitions is the number of device partitions, and Owned returns
	// those this instance owns (partition.Consumer.Owned): with both, each
	// contribution carries this instance's event-time watermark and the
	// partitions it covers, and the ClassSync is a pipeline.ClassGate (see
	// the type's doc). Without them, no watermark: nothing ever waits.
	Partitions int
	Owned      func() []int
	// Lag is how far an event may be ahead of the merged view's coverage
	// and be judged at once; Step how far this instance's watermark
	// advances before it publishes again between Intervals (what keeps a
	// replay's view within the lag; it must be less than Lag); Stall how
	// long a partition's unchanged coverage holds events back. Zero:
	// DefaultClassLag, Lag/3 and DefaultClassStall.
	Lag, Step, Stall time.Duration
	// Awaited, when set, is asked about a partition whose coverage stayed
	// unchanged for Stall, with the instance that claims it ("" when none
	// does): true (its claimer is alive, or a takeover of it is under way:
	// partition.Consumer.Awaited) keeps it holding events back until its
	// coverage changes or for Await in all (default DefaultClassAwait);
	// false lets it be ignored. Nil: ignored after Stall. It is asked at
	// most once a second per partition, from a merge.
	Awaited func(ctx context.Context, p int, claimer string) bool
	Await   time.Duration
}

// ClassSync publishes a ClassModel's contribution to the instances' shared
// bucket and merges the others' latest contributions into the model's
// overlay (detectors.ClassModel.NewMerge), every Interval, off the hot
// path: workers keep learning and reading lock-free while a round decodes
// and merges, and the new overlay is swapped in with atomic pointers.
//
// Own contributions never count twice: an instance publishes only its own
// learning (the overlay is not in it) and skips its own object when it
// merges. A contribution not rewritten within Expiry is dropped from the
// next round's merge. A partition that moves to another instance moves its
// devices' contribution with it as the new owner learns their events: the
// merged statistics are unions of device sketches, so while the old
// owner's contribution is still merged (it keeps publishing, or its object
// has not expired) the devices count once, and after it they count through
// the new owner's contribution.
//
// Event-time watermarks (with Partitions and Owned). Merging at an interval
// of wall time leaves the view behind in event time by what the others
// processed since their last publication: at a replay's speed (hours of
// events a minute) tens of minutes, and a class then looks younger and
// smaller than it was at the judged event's time (a command no other
// device issued is learned by a device whose class looks small, and its
// later use is no longer new). So each contribution carries, in its object
// metadata, its instance's watermark (schemas.ClassStatsMetaWatermark:
// every event of its partitions up to that event time is in the
// contribution; an instance with nothing pending counts the wall clock's
// time when the events are live, the others' highest coverage in a
// replay) and the partitions it owned (schemas.ClassStatsMetaPartitions).
// A partition's coverage is the watermark of the latest merged
// contribution that claims it (a dead owner's stale claim is overtaken by
// the new owner's); the view covers the least coverage of the partitions
// this instance does not own (its own it learns live), and Limit is that
// plus Lag. The pipeline (ClassGate) judges events up to Limit at once and
// holds beyond it: it then calls Hold, which publishes this instance's
// watermark when it moved and merges again, until the limit moves past
// the pipeline's events. An instance publishes, besides every Interval,
// when its watermark advanced by Step (Learned), so the slowest instance,
// which never holds (Lag > Step), keeps the others going; two instances
// cannot wait for each other, each being more than Lag ahead of the other.
//
// Bounds: a partition whose coverage did not change for Stall (wall time)
// is ignored until it changes (its owner died and no new owner published
// yet, or it has no owner), counted in schemas.MetricClassStalls, unless
// Awaited says its owner may still move it (a live instance busy for
// longer, as in a takeover during a stream leader's election, or a dead
// owner's partition that another instance is taking over): then it is
// ignored after Await (ignored after 30 s, such a partition let the others
// judge events far ahead of what it covered: bench/RESULTS.md w4); a round
// that cannot list the contributions opens the limit (nothing waits on a
// view that cannot be read); and the pipeline gives up a hold after its
// own bound. In live operation the limit is Lag ahead of the others'
// watermarks, which trail the clock by their Interval and their
// processing delay, so nothing waits unless another instance's partitions
// are more than Lag minus an Interval behind: the others then wait for
// it, at most Lag ahead of it (or Stall, when it stops).
type ClassSync struct {
	model *detectors.ClassModel
	cfg   ClassSyncConfig
	merge *detectors.Merge
	log   *slog.Logger

	// cache holds the last decoded bytes of each instance's object, by
	// name, with its digest, so that an unchanged object is not fetched
	// again.
	cache map[string]cached

	mu    sync.Mutex
	stats ClassSyncStats

	// round serialises Publish and Merge (Run's rounds and Hold's).
	round sync.Mutex
	// learned is the event time up to which this instance learned every
	// event it was handed (Learned), idle whether nothing was pending then.
	learned atomic.Int64
	idle    atomic.Bool
	// skew is the wall clock's time minus learned when learned last
	// advanced (math.MinInt64 before): within Lag, the events are live.
	skew atomic.Int64
	// others is the highest coverage merged of the partitions this
	// instance does not own (math.MinInt64: none), what an idle instance
	// claims in a replay (watermark). refresh asks Run to merge, then
	// publish if the claim moved (Learned, idle in a replay, at most every
	// idleMergeEvery since refreshed, in Unix ns).
	others    atomic.Int64
	refresh   atomic.Bool
	refreshed atomic.Int64
	// published is the watermark of the last contribution published
	// (math.MinInt64 before the first), claimed its partitions.
	published atomic.Int64
	claimed   string
	// due asks Run for a publication (Learned, at a Step).
	due chan struct{}
	// limit is the event time up to which events may be judged now; open
	// means no limit.
	limit atomic.Int64
	open  atomic.Bool
	// cover is each partition's coverage at the last merge and when it
	// last changed (wall time); guarded by round.
	cover   []int64
	changed []time.Time
	stalled []bool
	// awaited[p] is Awaited's last answer for partition p while its
	// coverage stalled, asked at awaitedAt[p] (wall time).
	awaited   []bool
	awaitedAt []time.Time
}

// awaitedEvery bounds how often Awaited is asked about one partition.
const awaitedEvery = time.Second

// idleMergeEvery bounds how often an idle instance in a replay merges
// between Intervals to raise its claim (the others' highest coverage): an
// instance ahead of all others advances by about Lag per such merge.
const idleMergeEvery = time.Second

type cached struct {
	digest string
	data   []byte
}

// ClassSyncStats is what a ClassSync did, for metrics.
type ClassSyncStats struct {
	// Rounds counts the rounds run, Failures those that failed (publish or
	// merge).
	Rounds, Failures uint64
	// PublishedBytes is the size of the last contribution put, compressed,
	// and RawBytes before compression.
	PublishedBytes, RawBytes int
	// Merged is how many other instances' contributions the last round
	// merged; Expired how many it skipped as older than Expiry.
	Merged, Expired int
	// MergeSeconds is how long the last merge took (fetch, decode, merge,
	// swap), and PublishSeconds the last publish (snapshot, compress, put).
	MergeSeconds, PublishSeconds float64
	// Ages is the age, at the last round, of each merged contribution (the
	// time since its instance last wrote it), by instance.
	Ages map[string]float64
	// Stalls counts the times a partition was ignored by the watermark
	// after its coverage stayed unchanged for Stall; Lagging is the
	// partitions the limit was computed from at the last merge (not owned
	// here, not ignored).
	Stalls  uint64
	Lagging int
	// Watermark is the event time (Unix ns) this instance last published
	// as covered, and Limit the event time up to which events may be
	// judged, as of the last merge (0: no watermark, or no limit).
	Watermark, Limit int64
}

// NewClassSync returns a ClassSync of model.
func NewClassSync(model *detectors.ClassModel, cfg ClassSyncConfig) (*ClassSync, error) {
	if cfg.Store == nil || cfg.Instance == "" {
		return nil, fmt.Errorf("cannot merge class statistics: a store and an instance name are required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultClassSyncInterval
	}
	if cfg.Expiry <= 0 {
		cfg.Expiry = DefaultClassSyncExpiry
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Lag <= 0 {
		cfg.Lag = DefaultClassLag
	}
	if cfg.Step <= 0 || cfg.Step >= cfg.Lag {
		cfg.Step = cfg.Lag / 3
	}
	if cfg.Stall <= 0 {
		cfg.Stall = DefaultClassStall
	}
	if cfg.Await <= 0 {
		cfg.Await = DefaultClassAwait
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &ClassSync{model: model, cfg: cfg, merge: model.NewMerge(), log: log, cache: map[string]cached{},
		due: make(chan struct{}, 1)}
	s.learned.Store(math.MinInt64)
	s.published.Store(math.MinInt64)
	s.skew.Store(math.MinInt64)
	s.others.Store(math.MinInt64)
	s.open.Store(true)
	if s.watermarks() {
		// Until the first merge, every partition holds events back (none
		// is known to be covered), for at most Stall.
		s.open.Store(false)
		s.limit.Store(math.MinInt64)
		s.cover = make([]int64, cfg.Partitions)
		s.changed = make([]time.Time, cfg.Partitions)
		s.stalled = make([]bool, cfg.Partitions)
		s.awaited, s.awaitedAt = make([]bool, cfg.Partitions), make([]time.Time, cfg.Partitions)
		now := cfg.Now()
		for p := range s.cover {
			s.cover[p], s.changed[p] = math.MinInt64, now
		}
	}
	return s, nil
}

// watermarks reports whether contributions carry watermarks.
func (s *ClassSync) watermarks() bool { return s.cfg.Partitions > 0 && s.cfg.Owned != nil }

// Run runs a round at once, then every Interval, until ctx ends; it
// returns nil then. Between rounds it publishes when Learned asks (a Step
// of the watermark, idle or busy again). A failed round is logged and
// counted, and the next one tries again.
func (s *ClassSync) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	round := true
	for {
		var err error
		switch {
		case round:
			err = s.Round(ctx)
		case s.refresh.Swap(false):
			err = s.refreshIdle(ctx)
		default:
			if err = s.Publish(ctx); err != nil {
				s.count(err)
			}
		}
		if err != nil && ctx.Err() == nil {
			s.log.Warn("class statistics round failed", "instance", s.cfg.Instance, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			round = true
		case <-s.due:
			round = false // a Step: publish (the others merge it when they need it)
		}
	}
}

// refreshIdle merges, then publishes when the watermark moved: an idle
// instance in a replay claims the others' highest coverage (watermark).
func (s *ClassSync) refreshIdle(ctx context.Context) error {
	s.refreshed.Store(s.cfg.Now().UnixNano())
	err := s.Merge(ctx)
	if s.watermark() != s.published.Load() {
		err = errors.Join(err, s.Publish(ctx))
	}
	if err != nil {
		s.count(err)
	}
	return err
}

// count counts a failed round.
func (s *ClassSync) count(error) {
	s.mu.Lock()
	s.stats.Failures++
	s.mu.Unlock()
}

// Round publishes this instance's contribution, then merges the others'.
func (s *ClassSync) Round(ctx context.Context) error {
	perr := s.Publish(ctx)
	merr := s.Merge(ctx)
	s.mu.Lock()
	s.stats.Rounds++
	if perr != nil || merr != nil {
		s.stats.Failures++
	}
	s.mu.Unlock()
	return errors.Join(perr, merr)
}

// Publish puts this instance's contribution (S2-compressed) as its object,
// with its watermark and partitions when it has them.
func (s *ClassSync) Publish(ctx context.Context) error {
	s.round.Lock()
	defer s.round.Unlock()
	return s.publish(ctx)
}

func (s *ClassSync) publish(ctx context.Context) error {
	start := time.Now()
	meta := jetstream.ObjectMeta{Name: s.cfg.Instance, Metadata: map[string]string{
		schemas.CheckpointMetaEncoding: schemas.CheckpointEncodingS2,
		schemas.ClassStatsMetaVersion:  strconv.Itoa(detectors.ContributionVersion),
	}}
	var wm int64
	var claim string
	if s.watermarks() {
		// Read before the snapshot: the contribution holds at least what
		// the watermark claims.
		wm, claim = s.watermark(), partitionList(s.cfg.Owned())
		meta.Metadata[schemas.ClassStatsMetaWatermark] = strconv.FormatInt(wm, 10)
		meta.Metadata[schemas.ClassStatsMetaPartitions] = claim
	}
	raw := s.model.AppendContribution(nil)
	data := s2.Encode(nil, raw)
	if _, err := s.cfg.Store.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("cannot publish class statistics %q: %w", s.cfg.Instance, err)
	}
	if s.watermarks() {
		s.published.Store(wm)
		s.claimed = claim
	}
	s.mu.Lock()
	s.stats.PublishedBytes, s.stats.RawBytes = len(data), len(raw)
	s.stats.PublishSeconds = time.Since(start).Seconds()
	s.stats.Watermark = wm
	s.mu.Unlock()
	return nil
}

// watermark is the event time this instance's contribution covers: what it
// learned, or, when nothing was pending, the clock's time when the events
// are live (replay false), else the others' highest coverage merged.
//
// Claiming the clock's time in a replay (events hours behind the clock)
// let the others judge without bound while this instance was idle: at the
// start, when every instance is idle, and when its partitions drained or
// a partition it acquired had nothing delivered yet (bench/RESULTS.md w4).
// Its partitions had nothing pending when it looked, so they hold every
// event the ingest stage had published by then, and the others had
// learned no later event than that: their highest coverage is a claim
// that is true, and it follows them (refreshIdle).
func (s *ClassSync) watermark() int64 {
	wm := s.learned.Load()
	if !s.idle.Load() {
		return wm
	}
	now := s.cfg.Now().UnixNano()
	if !s.replay(now) {
		return max(wm, now)
	}
	return max(wm, s.others.Load())
}

// replay reports whether the events are not live: neither this
// instance's latest learned event nor the others' highest coverage was
// within Lag of the clock's time (when learned; now, for the others').
func (s *ClassSync) replay(now int64) bool {
	if sk := s.skew.Load(); sk != math.MinInt64 && sk <= int64(s.cfg.Lag) {
		return false
	}
	o := s.others.Load()
	return o == math.MinInt64 || now-o > int64(s.cfg.Lag)
}

func partitionList(parts []int) string {
	var b strings.Builder
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p))
	}
	return b.String()
}

// Learned tells the sync that every event this instance was handed up to
// event time t (Unix ns) is learned, and idle whether nothing else is
// pending; it asks for a publication when the watermark advanced by Step
// since the last one, or became idle. Called from the pipeline's
// collector; it never blocks.
func (s *ClassSync) Learned(t int64, idle bool) {
	for old := s.learned.Load(); t > old; old = s.learned.Load() {
		if s.learned.CompareAndSwap(old, t) {
			s.skew.Store(s.cfg.Now().UnixNano() - t)
			break
		}
	}
	wasIdle := s.idle.Swap(idle)
	if !s.watermarks() {
		return
	}
	// Idle in a replay: its claim follows the others' coverage, merged
	// at most every idleMergeEvery.
	refresh := false
	if now := s.cfg.Now().UnixNano(); idle && s.replay(now) && now-s.refreshed.Load() >= int64(idleMergeEvery) {
		refresh = true
		s.refresh.Store(true)
	}
	// Published at a Step, and when it becomes idle (its watermark jumps
	// to the clock's time, or to the others' coverage in a replay) or busy
	// again (that claim must be withdrawn).
	if pub := s.published.Load(); refresh || pub == math.MinInt64 || s.learned.Load()-pub >= int64(s.cfg.Step) || idle != wasIdle {
		select {
		case s.due <- struct{}{}:
		default:
		}
	}
}

// Limit returns the event time up to which events may be judged now (the
// merged view's coverage plus Lag), or open when nothing limits them (no
// watermarks, or a view that cannot be read).
func (s *ClassSync) Limit() (limit int64, open bool) {
	if s.open.Load() {
		return 0, true
	}
	return s.limit.Load(), false
}

// Hold is called while the pipeline holds events back beyond Limit: it
// publishes this instance's watermark or partitions if they changed since
// the last publication, merges the others' contributions again, and
// returns; it waits about wait first when the merge changed nothing it
// could see, so that a holding pipeline polls rather than spins.
func (s *ClassSync) Hold(ctx context.Context, wait time.Duration) {
	before, _ := s.Limit()
	s.round.Lock()
	var err error
	if s.watermarks() && (s.watermark() != s.published.Load() || partitionList(s.cfg.Owned()) != s.claimed) {
		err = s.publish(ctx)
	}
	err = errors.Join(err, s.merge1(ctx))
	s.round.Unlock()
	if err != nil && ctx.Err() == nil {
		s.count(err)
		s.log.Warn("class statistics round failed", "instance", s.cfg.Instance, "err", err)
	}
	if after, open := s.Limit(); open || after != before {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(wait):
	}
}

// Merge fetches the other instances' contributions written within Expiry
// (an unchanged object is not fetched again) and puts their merge in force
// as the model's overlay; with none, the overlay is removed. A contribution
// that cannot be fetched or decoded is left out of this round and reported.
func (s *ClassSync) Merge(ctx context.Context) error {
	s.round.Lock()
	defer s.round.Unlock()
	return s.merge1(ctx)
}

func (s *ClassSync) merge1(ctx context.Context) error {
	start := time.Now()
	infos, err := s.cfg.Store.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		s.open.Store(true) // a view that cannot be read holds nothing back
		return fmt.Errorf("cannot list class statistics: %w", err)
	}
	slices.SortFunc(infos, func(a, b *jetstream.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	now := s.cfg.Now()
	var errs []error
	ages := map[string]float64{}
	expired := 0
	seen := map[string]bool{}
	var cover []int64
	var claimedAt []time.Time
	var claimer []string
	if s.watermarks() {
		cover, claimedAt = make([]int64, s.cfg.Partitions), make([]time.Time, s.cfg.Partitions)
		claimer = make([]string, s.cfg.Partitions)
		for p := range cover {
			cover[p] = math.MinInt64
		}
	}
	s.merge.Begin()
	for _, info := range infos {
		if info.Name == s.cfg.Instance || info.Deleted {
			continue
		}
		age := now.Sub(info.ModTime)
		if age > s.cfg.Expiry {
			expired++
			continue
		}
		seen[info.Name] = true
		data, err := s.fetch(ctx, info)
		if err == nil {
			err = s.merge.Add(data)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("instance %q: %w", info.Name, err))
			continue
		}
		ages[info.Name] = age.Seconds()
		if cover != nil {
			claims(info, cover, claimedAt, claimer)
		}
	}
	s.merge.Apply()
	if cover != nil {
		s.cover1(ctx, cover, claimer, now)
	}
	for name := range s.cache {
		if !seen[name] {
			delete(s.cache, name)
		}
	}
	s.mu.Lock()
	s.stats.Merged, s.stats.Expired, s.stats.Ages = len(ages), expired, ages
	s.stats.MergeSeconds = time.Since(start).Seconds()
	s.mu.Unlock()
	if len(errs) > 0 {
		return fmt.Errorf("cannot merge class statistics: %w", errors.Join(errs...))
	}
	return nil
}

// claims sets cover[p] to the watermark of a contribution's metadata for
// each partition p it claims, when it was written after the claim in
// force (claimedAt[p]), and claimer[p] to its instance: the latest owner's
// claim stands, not a dead owner's (which may be higher: the clock's time
// of an instance that had nothing pending). A contribution without them
// claims none.
func claims(info *jetstream.ObjectInfo, cover []int64, claimedAt []time.Time, claimer []string) {
	wm, err := strconv.ParseInt(info.Metadata[schemas.ClassStatsMetaWatermark], 10, 64)
	if err != nil {
		return
	}
	for f := range strings.SplitSeq(info.Metadata[schemas.ClassStatsMetaPartitions], ",") {
		p, err := strconv.Atoi(f)
		if err != nil || p < 0 || p >= len(cover) {
			continue
		}
		if cover[p] == math.MinInt64 || info.ModTime.After(claimedAt[p]) || info.ModTime.Equal(claimedAt[p]) && wm > cover[p] {
			cover[p], claimedAt[p], claimer[p] = wm, info.ModTime, info.Name
		}
	}
}

// cover1 puts in force the limit of the coverage just merged: the least
// coverage of the partitions this instance does not own, ignoring those
// unchanged for Stall and not awaited (or unchanged for Await), plus Lag.
func (s *ClassSync) cover1(ctx context.Context, cover []int64, claimer []string, now time.Time) {
	own := make([]bool, len(cover))
	for _, p := range s.cfg.Owned() {
		if p >= 0 && p < len(own) {
			own[p] = true
		}
	}
	least, lagging, stalls := int64(math.MaxInt64), 0, uint64(0)
	highest := int64(math.MinInt64)
	for p, c := range cover {
		if c != s.cover[p] {
			s.cover[p], s.changed[p] = c, now
		}
		if own[p] {
			continue
		}
		highest = max(highest, c)
		if still := now.Sub(s.changed[p]); still >= s.cfg.Stall && (still >= s.cfg.Await || !s.awaitedNow(ctx, p, claimer[p], now)) {
			if !s.stalled[p] {
				s.stalled[p] = true
				stalls++
			}
			continue
		}
		s.stalled[p] = false
		if c < least {
			least = c
		}
		lagging++
	}
	for old := s.others.Load(); highest > old && !s.others.CompareAndSwap(old, highest); old = s.others.Load() {
	}
	limit := int64(0)
	if least != math.MaxInt64 {
		limit = satAdd(least, int64(s.cfg.Lag))
	}
	s.limit.Store(limit)
	s.open.Store(least == math.MaxInt64)
	s.mu.Lock()
	s.stats.Stalls += stalls
	s.stats.Lagging, s.stats.Limit = lagging, limit
	s.mu.Unlock()
}

// awaitedNow returns Awaited's answer for partition p, asked again when
// the last one is older than awaitedEvery; false without Awaited.
func (s *ClassSync) awaitedNow(ctx context.Context, p int, claimer string, now time.Time) bool {
	if s.cfg.Awaited == nil {
		return false
	}
	if s.awaitedAt[p].IsZero() || now.Sub(s.awaitedAt[p]) >= awaitedEvery || now.Before(s.awaitedAt[p]) {
		s.awaited[p], s.awaitedAt[p] = s.cfg.Awaited(ctx, p, claimer), now
	}
	return s.awaited[p]
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if a == math.MinInt64 {
		return math.MinInt64
	}
	return a + b
}

// fetchTimeout plus a second per fetchRate bytes bounds the fetch of one
// contribution.
const (
	fetchTimeout = 2 * time.Second
	fetchRate    = 10 << 20
)

// fetch returns the decoded contribution of info's object, from the cache
// when its digest did not change.
func (s *ClassSync) fetch(ctx context.Context, info *jetstream.ObjectInfo) ([]byte, error) {
	if c, ok := s.cache[info.Name]; ok && c.digest == info.Digest {
		return c.data, nil
	}
	// Bounded: a read that overlaps the instance's next Put of the object
	// was seen to wait for chunks the Put purged until the context ended
	// (a holding pipeline then waits on it); the next round reads again.
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout+time.Duration(info.Size/fetchRate)*time.Second)
	defer cancel()
	data, err := s.cfg.Store.GetBytes(fctx, info.Name)
	if err != nil {
		return nil, fmt.Errorf("cannot fetch: %w", err)
	}
	switch enc := info.Metadata[schemas.CheckpointMetaEncoding]; enc {
	case schemas.CheckpointEncodingS2:
		if data, err = s2.Decode(nil, data); err != nil {
			return nil, fmt.Errorf("cannot decode: %w", err)
		}
	case "":
	default:
		return nil, fmt.Errorf("cannot decode: encoding %q", enc)
	}
	s.cache[info.Name] = cached{digest: info.Digest, data: data}
	return data, nil
}

// Stats returns what the sync did so far.
func (s *ClassSync) Stats() ClassSyncStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Ages = make(map[string]float64, len(s.stats.Ages))
	for k, v := range s.stats.Ages {
		st.Ages[k] = v
	}
	return st
}

// WriteMetrics writes the sync's metrics in the Prometheus text format: the
// age of each merged contribution, the last merge's time, the last
// contribution's size, the contributions merged and the failed rounds.
func (s *ClassSync) WriteMetrics(w io.Writer) {
	st := s.Stats()
	fmt.Fprintf(w, "# HELP %s Age of each other instance's class contribution at the last merge.\n# TYPE %s gauge\n",
		schemas.MetricClassContributionAge, schemas.MetricClassContributionAge)
	names := slices.Sorted(maps.Keys(st.Ages))
	for _, n := range names {
		fmt.Fprintf(w, "%s{instance=%q} %g\n", schemas.MetricClassContributionAge, n, st.Ages[n])
	}
	fmt.Fprintf(w, "# HELP %s Seconds the last class statistics merge took.\n# TYPE %s gauge\n%s %g\n",
		schemas.MetricClassMergeSeconds, schemas.MetricClassMergeSeconds, schemas.MetricClassMergeSeconds, st.MergeSeconds)
	fmt.Fprintf(w, "# HELP %s Bytes of this instance's last class contribution, compressed.\n# TYPE %s gauge\n%s %d\n",
		schemas.MetricClassPublishBytes, schemas.MetricClassPublishBytes, schemas.MetricClassPublishBytes, st.PublishedBytes)
	fmt.Fprintf(w, "# HELP %s Other instances' class contributions in the last merge.\n# TYPE %s gauge\n%s %d\n",
		schemas.MetricClassMerged, schemas.MetricClassMerged, schemas.MetricClassMerged, st.Merged)
	fmt.Fprintf(w, "# HELP %s Class statistics rounds that failed.\n# TYPE %s counter\n%s %d\n",
		schemas.MetricClassSyncFailures, schemas.MetricClassSyncFailures, schemas.MetricClassSyncFailures, st.Failures)
	if !s.watermarks() {
		return
	}
	fmt.Fprintf(w, "# HELP %s Event time this instance last published as learned (its class contribution's watermark).\n# TYPE %s gauge\n%s %g\n",
		schemas.MetricClassWatermark, schemas.MetricClassWatermark, schemas.MetricClassWatermark, unixSeconds(st.Watermark))
	fmt.Fprintf(w, "# HELP %s Event time up to which events are judged at once: the merged class view's coverage plus the lag (0: no limit).\n# TYPE %s gauge\n%s %g\n",
		schemas.MetricClassLimit, schemas.MetricClassLimit, schemas.MetricClassLimit, unixSeconds(st.Limit))
	fmt.Fprintf(w, "# HELP %s Partitions ignored by the class watermark after their coverage stayed unchanged for the stall bound.\n# TYPE %s counter\n%s %d\n",
		schemas.MetricClassStalls, schemas.MetricClassStalls, schemas.MetricClassStalls, st.Stalls)
}

func unixSeconds(ns int64) float64 {
	if ns == math.MinInt64 || ns == math.MaxInt64 {
		return 0
	}
	return float64(ns) / 1e9
}
