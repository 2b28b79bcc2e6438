package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
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
}

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
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ClassSync{model: model, cfg: cfg, merge: model.NewMerge(), log: log, cache: map[string]cached{}}, nil
}

// Run runs a round at once, then every Interval, until ctx ends; it
// returns nil then. A failed round is logged and counted, and the next one
// tries again.
func (s *ClassSync) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		if err := s.Round(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("class statistics round failed", "instance", s.cfg.Instance, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
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

// Publish puts this instance's contribution (S2-compressed) as its object.
func (s *ClassSync) Publish(ctx context.Context) error {
	start := time.Now()
	raw := s.model.AppendContribution(nil)
	data := s2.Encode(nil, raw)
	meta := jetstream.ObjectMeta{Name: s.cfg.Instance, Metadata: map[string]string{
		schemas.CheckpointMetaEncoding: schemas.CheckpointEncodingS2,
		schemas.ClassStatsMetaVersion:  strconv.Itoa(detectors.ContributionVersion),
	}}
	if _, err := s.cfg.Store.Put(ctx, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("cannot publish class statistics %q: %w", s.cfg.Instance, err)
	}
	s.mu.Lock()
	s.stats.PublishedBytes, s.stats.RawBytes = len(data), len(raw)
	s.stats.PublishSeconds = time.Since(start).Seconds()
	s.mu.Unlock()
	return nil
}

// Merge fetches the other instances' contributions written within Expiry
// (an unchanged object is not fetched again) and puts their merge in force
// as the model's overlay; with none, the overlay is removed. A contribution
// that cannot be fetched or decoded is left out of this round and reported.
func (s *ClassSync) Merge(ctx context.Context) error {
	start := time.Now()
	infos, err := s.cfg.Store.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return fmt.Errorf("cannot list class statistics: %w", err)
	}
	slices.SortFunc(infos, func(a, b *jetstream.ObjectInfo) int { return strings.Compare(a.Name, b.Name) })
	now := s.cfg.Now()
	var errs []error
	ages := map[string]float64{}
	expired := 0
	seen := map[string]bool{}
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
	}
	s.merge.Apply()
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

// fetch returns the decoded contribution of info's object, from the cache
// when its digest did not change.
func (s *ClassSync) fetch(ctx context.Context, info *jetstream.ObjectInfo) ([]byte, error) {
	if c, ok := s.cache[info.Name]; ok && c.digest == info.Digest {
		return c.data, nil
	}
	data, err := s.cfg.Store.GetBytes(ctx, info.Name)
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
}
