package pipeline

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Handover moves a device partition's state with its ownership
// (partition.Owner, for Config.PartitionOwnership with a CheckpointStore):
//   - Acquired(p, firstSeq) restores object devices.<p> and catches up the
//     partition to firstSeq-1, or, when that first message is a redelivery,
//     to the last message the partition's consumer delivered to anyone
//     (Pipeline.RestorePartition), before the partition consumer hands on
//     p's first message: the new owner resumes where the previous one
//     saved, and the messages the previous owner left unacked that the
//     catch-up judged are acked without being judged again when they come.
//   - Lost(p) saves devices.<p> (Pipeline.SavePartition: the results before
//     it are durable first) and takes p's records out of the tables
//     (DropPartition): the next owner restores what this one learned.
//
// A clean stop saves the owned partitions with the drain's checkpoint; a
// crash saves nothing, and the next owner restores the last periodic save
// (Config.CheckpointEvery) and catches up from its position: the events the
// crashed owner stored after that save are judged again so that the
// records learn them, but their rows, stored alerts and decisions and
// incident updates are not written again (written.go; written again, and
// counted, when ClickHouse cannot say at the takeover). An owner
// fenced off after a stall (partition's package doc) gets Lost too, possibly
// after the next owner restored and saved: its save is skipped when the
// stored object is further on than its own position.
//
// What does not move with a partition: the instance's class statistics and
// alert calibration (aggregates over the devices of a class, whatever their
// partition: ClassSync merges part of them across instances at an
// interval, and with watermarks each instance holds its events until the
// merged view covers their event time minus a lag; a partition whose
// owner died is waited for until its new owner publishes, at most the
// stall bound), the entity owners' decision engines (in the global object),
// and the workers' silence-sweep clocks. A new owner judges the moved
// devices against its own of these, so an alert near its threshold can
// come out differently than in one undisturbed run.
//
// The hooks run partition operations on the pipeline's ingest loop
// (Pipeline.do) and wait for them, from the partition consumer's goroutines,
// never the ingest loop's: while a restore runs, Fetch hands on the other
// partitions' messages only up to the acquired one's first (its merge in
// stream order), so the ingest loop comes back for the operation within a
// FetchWait. The partition consumer exists before the pipeline (it is the
// pipeline's Source): the hooks wait for Attach, or for Close.
type Handover struct {
	log      *slog.Logger
	attached chan struct{}
	closed   chan struct{}
	close    sync.Once
	p        *Pipeline
	// lastTakeover is the duration of the last Acquired (restore and
	// catch-up), for tests and logs.
	mu           sync.Mutex
	lastTakeover time.Duration
	takeovers    int
}

// NewHandover returns a Handover whose hooks wait until Attach.
func NewHandover(log *slog.Logger) *Handover {
	if log == nil {
		log = slog.Default()
	}
	return &Handover{log: log, attached: make(chan struct{}), closed: make(chan struct{})}
}

// Attach gives the hooks their pipeline; call it once, before Run.
func (h *Handover) Attach(p *Pipeline) {
	h.p = p
	close(h.attached)
}

// Close makes hooks that wait for Attach return without doing anything
// (the pipeline was never made): call it before the partition consumer's
// Stop.
func (h *Handover) Close() { h.close.Do(func() { close(h.closed) }) }

// pipeline waits for Attach; nil after Close.
func (h *Handover) pipeline() *Pipeline {
	select {
	case <-h.attached:
		return h.p
	case <-h.closed:
		return nil
	}
}

// Acquired restores partition part and catches it up to firstSeq-1.
func (h *Handover) Acquired(part int, firstSeq uint64) {
	p := h.pipeline()
	if p == nil {
		return
	}
	start := time.Now()
	upTo := uint64(0)
	if firstSeq > 0 {
		upTo = firstSeq - 1
	}
	err := p.RestorePartition(context.Background(), part, upTo)
	took := time.Since(start)
	h.mu.Lock()
	h.lastTakeover, h.takeovers = took, h.takeovers+1
	h.mu.Unlock()
	if err != nil {
		h.log.Error("partition acquired without its state", "partition", part, "first_seq", firstSeq, "seconds", took.Seconds(), "err", err)
		return
	}
	h.log.Info("partition acquired", "partition", part, "first_seq", firstSeq, "seconds", took.Seconds())
}

// Lost saves partition part's state and drops its records.
func (h *Handover) Lost(part int) {
	p := h.pipeline()
	if p == nil {
		return
	}
	start := time.Now()
	if err := p.SavePartition(context.Background(), part); err != nil {
		// The next owner restores an older save and catches up further.
		h.log.Warn("cannot save a lost partition's state", "partition", part, "err", err)
	}
	if err := p.DropPartition(context.Background(), part); err != nil {
		h.log.Warn("cannot drop a lost partition's records", "partition", part, "err", err)
		return
	}
	h.log.Info("partition handed over", "partition", part, "seconds", time.Since(start).Seconds())
}

// Takeovers returns how many partitions were acquired and how long the
// last restore and catch-up took.
func (h *Handover) Takeovers() (n int, last time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.takeovers, h.lastTakeover
}
