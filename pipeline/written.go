package pipeline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/schemas"
)

// Results a killed partition owner stored after its last checkpoint.
//
// A partition's new owner restores the partition's last saved object and
// judges again, in stream order, the messages after its position
// (RestorePartition): their events must teach the restored records what the
// previous owner's records learned from them, so that the state ends where
// the previous owner's did. But the previous owner may have stored the
// results of many of them already (it wrote rows until it died; its
// checkpoints come only every Config.CheckpointEvery). Before that
// catch-up, the new owner reads the events of the range once and asks the
// row writer (WrittenReader, one lookup per partition in chunks of
// writtenChunk ids) which of their scored rows, alerts and decisions are
// stored; the catch-up then judges those events with their rows, alert
// rows, decision rows and incident updates left out (writtenResults).
// Stored alerts and decisions are published to NATS again: a row stored
// says nothing about its alert's publication (the publisher and the
// flusher run apart), and their ids are derived from the event's identity
// and findings, so a copy within the streams' duplicate window is dropped
// by the server (Nats-Msg-Id) and the bucket of active blocks is left
// alone when it holds the decision already (sink.NATSPublisher).
//
// An event whose row is stored is judged again like any other; what that
// judging raises is kept or dropped by what the previous owner stored of the
// event's results (stored):
//
//   - an alert or decision stored already (the same id): published again,
//     not stored again;
//   - not stored, for an event whose row is stored: the previous owner's
//     judgement stands; the new alert and its decision are dropped and
//     counted (Metrics.CatchUpDropped), never invented. Nothing is lost
//     by that: the flusher stores a job's alerts, then their decisions,
//     then its rows (storeResults), so a stored row means its event's
//     alerts and decisions are stored; what is not stored was not raised by
//     the previous owner. (With rows first, an owner killed in between lost
//     those alerts from ClickHouse: lock-000006 in the 3-node cluster test,
//     bench/RESULTS.md c2, w1.) Writing an alert when no alert of the event
//     is stored was tried and taken back: a judging again that differs
//     (another class view, a partition learned from the stream's start)
//     invented an alert the undisturbed run never raised
//     (TestTakeoverOfANeverSavedPartition).
//
// Judged again against what does not move with a partition (the new owner's
// class statistics and calibration, see Handover), an event near a
// threshold can come out differently: that is why a stored event keeps the
// previous owner's judgement.
//
// When the lookup fails (ClickHouse unreachable at the takeover), the
// catch-up writes everything again, as before: rows with the same ids,
// which FINAL and the ReplacingMergeTree's merges collapse; it is logged
// and counted (Metrics.CatchUpUnchecked).

// WrittenReader is a RowWriter that can say which results of a set of
// events are stored (sink.ClickHouse).
type WrittenReader interface {
	// Written returns, of events (event ids, with event times within
	// [from, to] Unix nanoseconds), the ids of those with a scored row, the
	// ids of the alerts they raised (Alert.LastEventID among them) that
	// are stored, and the ids of the decisions taken on those alerts that
	// are stored.
	Written(ctx context.Context, events []uint64, from, to int64) (Written, error)
}

// Written is what WrittenReader.Written found stored: the events with a
// scored row, the alerts and the decisions.
type Written struct {
	Events    []uint64
	Alerts    []string
	Decisions []string
}

// writtenChunk bounds the event ids of one lookup: the query's text stays
// within ClickHouse's default max_query_size (256 KiB).
const writtenChunk = 8192

// writtenResults are the results of caught-up events that are stored
// already. The ingest loop adds to it (before a catch-up dispatches) and
// marks each caught-up event whose row is stored (item.written); the
// collector takes alert and decision ids out of it as it meets them, so
// each is left out once.
type writtenResults struct {
	mu        sync.Mutex
	events    map[uint64]struct{} // only the ingest loop reads it
	alerts    map[string]struct{}
	decisions map[string]struct{}
	// results counts the alert and decision ids held, so that the collector
	// takes the lock only while there are some.
	results atomic.Int64
}

func (w *writtenResults) add(got Written) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.events == nil {
		w.events, w.alerts, w.decisions = map[uint64]struct{}{}, map[string]struct{}{}, map[string]struct{}{}
	}
	for _, id := range got.Events {
		w.events[id] = struct{}{}
	}
	for _, id := range got.Alerts {
		if _, ok := w.alerts[id]; !ok {
			w.alerts[id] = struct{}{}
			w.results.Add(1)
		}
	}
	for _, id := range got.Decisions {
		if _, ok := w.decisions[id]; !ok {
			w.decisions[id] = struct{}{}
			w.results.Add(1)
		}
	}
}

// event reports whether event id's row is stored (the ingest loop's).
func (w *writtenResults) event(id uint64) bool {
	w.mu.Lock()
	_, ok := w.events[id]
	w.mu.Unlock()
	return ok
}

// clearEvents forgets the events (after a catch-up has dispatched them).
func (w *writtenResults) clearEvents() {
	w.mu.Lock()
	w.events = nil
	w.mu.Unlock()
}

// take reports whether alert (or decision, with decision set) id is stored,
// and forgets it.
func (w *writtenResults) take(id string, decision bool) bool {
	if w.results.Load() == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.alerts
	if decision {
		m = w.decisions
	}
	if _, ok := m[id]; !ok {
		return false
	}
	delete(m, id)
	w.results.Add(-1)
	return true
}

// eventSpan collects the ids and the time span of the events of a catch-up
// range that the catch-up will judge (ingest.Events, for the first read).
type eventSpan struct {
	ev       schemas.Event
	keep     func(ev *schemas.Event) bool
	ids      []uint64
	from, to int64
	// seq is the stream sequence of the message being read, and seqs the
	// message of each of ids.
	seq  uint64
	seqs []uint64
}

func (s *eventSpan) Next() *schemas.Event { return &s.ev }

func (s *eventSpan) Done(ok bool) {
	if !ok || !s.keep(&s.ev) {
		return
	}
	s.ids = append(s.ids, s.ev.ID)
	s.seqs = append(s.seqs, s.seq)
	s.from, s.to = min(s.from, s.ev.Time), max(s.to, s.ev.Time)
}

// lookUpWritten reads the messages of the catch-up range (filters, from
// from to upTo) once, collects the events of device partition part after
// pos (those the catch-up judges), and adds to p.written the results the
// row writer has stored of them. It returns how many events it collected
// and the last message of the range with an event whose row is stored (0:
// none), the last one the previous owner is known to have judged; an error
// when the row writer cannot say (no WrittenReader, NATS or ClickHouse
// unreachable): then nothing is added.
func (p *Pipeline) lookUpWritten(ctx context.Context, part int, filters []string, from, upTo, pos uint64) (n int, lastStored uint64, err error) {
	wr, ok := p.rows.(WrittenReader)
	if !ok {
		return 0, 0, errors.New("the row writer cannot tell what is stored")
	}
	if upTo < max(from, pos+1) {
		return 0, 0, nil
	}
	span := &eventSpan{from: math.MaxInt64, to: math.MinInt64, keep: func(ev *schemas.Event) bool {
		return schemas.PartitionOf(ev.DeviceAlt, p.cfg.Partitions) == part
	}}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, lookUpTimeout)
	defer cancel()
	msgs, err := p.readRange(ctx, filters, max(from, pos+1), upTo, span)
	if err != nil {
		return len(span.ids), 0, fmt.Errorf("cannot read the catch-up's events: %w", err)
	}
	var got Written
	for i := 0; i < len(span.ids); i += writtenChunk {
		g, err := wr.Written(ctx, span.ids[i:min(i+writtenChunk, len(span.ids))], span.from, span.to)
		if err != nil {
			return len(span.ids), 0, err
		}
		got.Events = append(got.Events, g.Events...)
		got.Alerts = append(got.Alerts, g.Alerts...)
		got.Decisions = append(got.Decisions, g.Decisions...)
	}
	p.written.add(got)
	if len(span.ids) == 0 {
		return 0, 0, nil
	}
	for i, id := range span.ids {
		if p.written.event(id) {
			lastStored = max(lastStored, span.seqs[i])
		}
	}
	p.log.Info("caught-up events stored already: judged without writing them again", "partition", part, "events", len(span.ids),
		"stored_rows", len(got.Events), "stored_alerts", len(got.Alerts), "stored_decisions", len(got.Decisions),
		"messages", msgs, "last_stored_seq", lastStored, "seconds", time.Since(start).Seconds())
	return len(span.ids), lastStored, nil
}

// lookUpTimeout bounds a takeover's look-up of what is stored: past it,
// the catch-up writes its results again (counted).
const lookUpTimeout = 2 * time.Minute

// maxEmptyFetches bounds the empty fetches in a row readRange accepts while
// the server says messages are pending (a stream whose leader just died).
const maxEmptyFetches = 30

// readRange decodes the messages of Config.Stream on filters from sequence
// from to upTo into out, without dispatching anything; it returns how many
// messages it read.
func (p *Pipeline) readRange(ctx context.Context, filters []string, from, upTo uint64, out *eventSpan) (int, error) {
	n := 0
	_, err := p.eachMessage(ctx, filters, from, upTo, maxEmptyFetches, func(msg jetstream.Msg, md *jetstream.MsgMetadata) error {
		n++
		out.seq = md.Sequence.Stream
		subject, data := msg.Subject(), msg.Data()
		switch {
		case strings.HasPrefix(subject, schemas.SubjectObsPrefix+"."):
			// entity observations: no row of their own
		case strings.HasPrefix(subject, schemas.SubjectEventsPrefix+"."):
			p.dec.Arrow(data, out)
		default:
			arrival := time.Now().UnixNano()
			if !md.Timestamp.IsZero() {
				arrival = md.Timestamp.UnixNano()
			}
			p.dec.Logs(subject, data, md.Sequence.Stream, arrival, out)
		}
		p.dec.ClearLetters()
		return nil
	})
	return n, err
}

// eachMessage reads Config.Stream on filters from sequence from to upTo in
// stream order (an ordered consumer) and calls fn with each message and its
// metadata, stopping at upTo, at fn's error, or when a fetch comes back
// empty and the server says nothing matching is pending. An empty fetch is
// the end only then: on a loaded machine a fetch can come back empty while
// messages up to upTo are still there (messages the stream's limits
// removed are not pending). maxEmpty > 0 bounds the empty fetches in a row
// with messages pending (a stream whose leader just died). It returns the
// last sequence read.
func (p *Pipeline) eachMessage(ctx context.Context, filters []string, from, upTo uint64, maxEmpty int,
	fn func(jetstream.Msg, *jetstream.MsgMetadata) error) (seq uint64, err error) {
	oc, err := p.cfg.Stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from})
	if err != nil {
		return 0, fmt.Errorf("cannot read the log stream from sequence %d: %w", from, err)
	}
	empty := 0
	for seq < upTo && ctx.Err() == nil {
		msgs, err := oc.Fetch(p.cfg.FetchBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return seq, fmt.Errorf("cannot read the log stream after sequence %d: %w", seq, err)
		}
		got := 0
		for msg := range msgs.Messages() {
			got++
			md, err := msg.Metadata()
			if err != nil {
				continue
			}
			if seq = md.Sequence.Stream; seq > upTo {
				break
			}
			if err := fn(msg, md); err != nil {
				return seq, err
			}
		}
		if got > 0 {
			empty = 0
			continue
		}
		info, err := oc.Info(ctx)
		if err != nil {
			return seq, fmt.Errorf("cannot read the log stream after sequence %d: %w", seq, err)
		}
		if info.NumPending == 0 {
			break
		}
		if empty++; maxEmpty > 0 && empty >= maxEmpty {
			return seq, fmt.Errorf("%d empty fetches after sequence %d with %d messages pending", empty, seq, info.NumPending)
		}
	}
	return seq, nil
}
