// Package ship follows log files (or stdin) and publishes their lines to
// JetStream in batches: the engine of `iotwatch ship`.
//
// Lines are packed into messages of up to Config.Lines lines and
// Config.MaxBytes bytes, published asynchronously with a bounded number in
// flight, each with a Nats-Msg-Id naming its byte range of its file:
//
//	<dev>.<ino>.<first-line hash>.<truncation generation>:<start>-<end>
//
// The state file records, per file, the offset up to which the server
// acknowledged everything, and the ends of the messages sent past it. A
// restart resumes from that offset and cuts its first messages at exactly the
// recorded ends, so re-sent messages carry the ids of the copies the stream
// already holds and its duplicate window drops them: no loss and, within the
// duplicate window, no duplicates. Because an id names a byte range and its
// content's file, a matching id always means the same bytes: deduplication can
// never drop data it has not stored.
package ship

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// retryPause is the least time between two sends of a message that failed;
// it doubles with each failure of the message, up to maxRetryPause.
const (
	retryPause    = time.Second
	maxRetryPause = 30 * time.Second
)

// retryWarnEvery rate-limits the warning of failed publishes.
const retryWarnEvery = 10 * time.Second

// Stdin is the input name that reads standard input.
const Stdin = "-"

// Config configures Run. Zero numeric fields take the defaults of DefaultConfig.
type Config struct {
	// Inputs are file paths, or Stdin. Stdin has no checkpoint.
	Inputs []string
	// Follow keeps reading files as they grow, across rotation and
	// truncation, until ctx is done. Without it, Run reads every input to its
	// end (a last line without newline included) and returns once all is acked.
	Follow bool
	// Subject is the subject messages are published on (bus.LogSubject).
	Subject string
	// Lines and MaxBytes bound one message; a single line longer than
	// MaxBytes is sent alone, and one longer than MaxLine is cut to MaxLine
	// (counted in Stats.Truncated; the pipeline dead-letters it).
	Lines    int
	MaxBytes int
	MaxLine  int
	// StateFile is where offsets are checkpointed; empty disables resuming.
	StateFile string
	// MaxPending bounds messages published and not yet acknowledged, and
	// MaxPendingBytes their bytes: beyond either, reading pauses.
	MaxPending      int
	MaxPendingBytes int
	// Poll is how often followed files are checked for new data, rotation
	// and truncation.
	Poll time.Duration
	// RotateWait is how long a rotated file is still read after its last
	// growth (writers reopen their log a little after the rename).
	RotateWait time.Duration
	// Checkpoint is the longest time between an ack and its state write.
	Checkpoint time.Duration
	// Progress, when positive, writes a progress line to ProgressOut that
	// often; a final summary goes to ProgressOut when it is set.
	Progress    time.Duration
	ProgressOut io.Writer
	// AckTimeout is how long a message may wait for its ack before it is
	// sent again (same id).
	AckTimeout time.Duration
	// DrainTimeout bounds the wait for outstanding acks when ctx is done.
	DrainTimeout time.Duration
	// GiveUp, when positive, makes Run fail (with a *GiveUpError) once the
	// oldest message in flight has gone unacknowledged for that long, through
	// publish errors, timeouts and retries; zero retries forever (a follower
	// outlives NATS outages). Acked offsets are saved, so a rerun resumes.
	GiveUp time.Duration
	// Stdin replaces os.Stdin (tests).
	Stdin *os.File
	// Log receives operational events; nil discards them.
	Log *slog.Logger
}

// DefaultConfig returns the defaults of `iotwatch ship`.
func DefaultConfig() Config {
	return Config{
		Follow:          true,
		Subject:         bus.LogSubject(schemas.FormatJSON, "_"),
		Lines:           100,
		MaxBytes:        512 << 10,
		MaxLine:         1 << 20,
		MaxPending:      1024,
		MaxPendingBytes: 64 << 20,
		Poll:            200 * time.Millisecond,
		RotateWait:      5 * time.Second,
		Checkpoint:      200 * time.Millisecond,
		AckTimeout:      30 * time.Second,
		DrainTimeout:    10 * time.Second,
	}
}

// Validate checks the configuration; errors name the field.
func (c *Config) Validate() error {
	switch {
	case len(c.Inputs) == 0:
		return errors.New("cannot ship: no input (a file, or - for stdin)")
	case c.Lines <= 0:
		return fmt.Errorf("cannot use lines %d: must be > 0", c.Lines)
	case c.MaxBytes <= 0:
		return fmt.Errorf("cannot use max_bytes %d: must be > 0", c.MaxBytes)
	case c.MaxLine < c.MaxBytes:
		return fmt.Errorf("cannot use max_bytes %d: must not exceed the largest message the server accepts (%d)", c.MaxBytes, c.MaxLine)
	case c.MaxPending <= 0:
		return fmt.Errorf("cannot use max_pending %d: must be > 0", c.MaxPending)
	case c.MaxPendingBytes < c.MaxLine:
		return fmt.Errorf("cannot use max_pending_bytes %d: must be >= the largest message (%d)", c.MaxPendingBytes, c.MaxLine)
	case c.Poll <= 0:
		return fmt.Errorf("cannot use poll %s: must be > 0", c.Poll)
	case c.AckTimeout <= 0:
		return fmt.Errorf("cannot use ack_timeout %s: must be > 0", c.AckTimeout)
	case c.Checkpoint <= 0:
		return fmt.Errorf("cannot use checkpoint %s: must be > 0", c.Checkpoint)
	case c.GiveUp < 0:
		return fmt.Errorf("cannot use give_up %s: must be >= 0", c.GiveUp)
	case c.Subject == "":
		return errors.New("cannot ship: empty subject")
	}
	stdin := 0
	for _, in := range c.Inputs {
		if in == Stdin {
			stdin++
		}
	}
	if stdin > 1 {
		return errors.New("cannot read stdin (-) twice")
	}
	return nil
}

// Stats are Run's counters; they may be read while Run runs.
type Stats struct {
	Lines       atomic.Uint64 // lines published (acked or not)
	Messages    atomic.Uint64 // messages published, retries excluded
	Bytes       atomic.Uint64 // payload bytes published
	Acked       atomic.Uint64 // messages acknowledged (stored or dropped as duplicates)
	Duplicates  atomic.Uint64 // acknowledged as duplicates: already in the stream
	Retries     atomic.Uint64 // re-publishes after an error or timeout
	Pending     atomic.Int64  // messages in flight
	Truncated   atomic.Uint64 // over-long lines cut to MaxLine
	Rotations   atomic.Uint64
	Truncations atomic.Uint64
}

// inflight is a published message awaiting its ack.
type inflight struct {
	m    *message
	msg  *nats.Msg
	id   string
	fut  jetstream.PubAckFuture
	sent time.Time
	// first is when the message was first sent, tries how often it was sent.
	first time.Time
	tries int
	done  bool // the future completed: ack or err is set
	ack   *jetstream.PubAck
	err   error
}

// Run ships cfg.Inputs to js until the inputs end (cfg.Follow false) or ctx
// is done, and returns once every published message is acknowledged (or
// cfg.DrainTimeout passed) and the state is saved. Publish errors are retried
// with the same message id until they succeed or ctx is done.
func Run(ctx context.Context, js jetstream.JetStream, cfg Config, stats *Stats) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if stats == nil {
		stats = new(Stats)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var saved []*fileState
	if cfg.StateFile != "" {
		s, err := loadState(cfg.StateFile)
		if err != nil {
			return err
		}
		saved = s
	}
	p := &publisher{cfg: &cfg, js: js, stats: stats, log: log, files: map[string]*fileState{}}
	out := make(chan *message, 64)
	rctx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	cut := cutter{lines: cfg.Lines, maxBytes: cfg.MaxBytes, maxLine: cfg.MaxLine}
	var wg sync.WaitGroup
	errc := make(chan error, len(cfg.Inputs))
	var stdinDone chan struct{}
	for _, in := range cfg.Inputs {
		fl := &follower{cfg: &cfg, cut: cut, path: in, out: out, stats: stats, log: log.With("input", in)}
		if in == Stdin {
			f := cfg.Stdin
			if f == nil {
				f = os.Stdin
			}
			fl.cur = &reader{path: in, f: f, stdin: true, key: "stdin-" + nuid.Next(), fp: "-"}
			stdinDone = make(chan struct{})
			go func() { // not waited for: a read from stdin cannot be interrupted
				defer close(stdinDone)
				if err := fl.pump(rctx, fl.cur, true); err != nil {
					errc <- err
				}
			}()
			continue
		}
		abs, err := filepath.Abs(in)
		if err != nil {
			return fmt.Errorf("cannot resolve %q: %w", in, err)
		}
		var mine []*fileState
		for _, s := range saved {
			if s.Path == abs {
				mine = append(mine, s)
			}
		}
		fl.path = abs
		for _, s := range fl.resume(mine) {
			p.files[fileID{s.Dev, s.Ino}.key()] = s
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fl.run(rctx); err != nil {
				errc <- err
			}
		}()
	}
	readersDone := make(chan struct{})
	go func() {
		wg.Wait()
		if stdinDone != nil {
			select {
			case <-stdinDone:
			case <-rctx.Done():
			}
		}
		close(readersDone)
	}()
	err := p.loop(ctx, out, readersDone, errc)
	stopReading()
	if _, gaveUp := errors.AsType[*GiveUpError](err); !gaveUp {
		if derr := p.drain(); err == nil {
			err = derr
		}
	}
	if serr := p.checkpoint(); err == nil {
		err = serr
	}
	if cfg.ProgressOut != nil {
		p.last.at, p.last.lines = p.start, 0
		fmt.Fprintf(cfg.ProgressOut, "ship: done %s\n", p.progress())
	}
	return err
}

// publisher owns the in-flight queue and the state. It runs in Run's goroutine.
type publisher struct {
	cfg      *Config
	js       jetstream.JetStream
	stats    *Stats
	log      *slog.Logger
	files    map[string]*fileState // by key, only files (not stdin)
	queue    []*inflight           // in publish order
	bytes    int
	dirty    bool
	lastWarn time.Time
	start    time.Time
	last     struct {
		at    time.Time
		lines uint64
	}
}

// loop publishes messages from out until the readers are done and every
// message is acked, or ctx is done.
func (p *publisher) loop(ctx context.Context, out chan *message, readersDone <-chan struct{}, errc <-chan error) error {
	p.start = time.Now()
	p.last.at = p.start
	ck := time.NewTicker(p.cfg.Checkpoint)
	defer ck.Stop()
	var progress <-chan time.Time
	if p.cfg.Progress > 0 && p.cfg.ProgressOut != nil {
		t := time.NewTicker(p.cfg.Progress)
		defer t.Stop()
		progress = t.C
	}
	done := readersDone
	finished := false
	for {
		if err := p.reap(); err != nil {
			return err
		}
		if finished && len(p.queue) == 0 {
			return nil
		}
		in := out
		if finished || len(p.queue) >= p.cfg.MaxPending || p.bytes+p.cfg.MaxLine > p.cfg.MaxPendingBytes {
			in = nil // back-pressure: readers block on a full channel
		}
		var ackOK <-chan *jetstream.PubAck
		var ackErr <-chan error
		var front *inflight
		if len(p.queue) > 0 && !p.queue[0].done {
			front = p.queue[0]
			ackOK, ackErr = front.fut.Ok(), front.fut.Err()
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case m := <-in:
			batch := []*message{m}
			for len(batch) < 256 && len(p.queue)+len(batch) < p.cfg.MaxPending {
				select {
				case m := <-out:
					batch = append(batch, m)
					continue
				default:
				}
				break
			}
			if err := p.publish(batch); err != nil {
				return err
			}
		case <-done:
			// Readers finished; take what they left in the channel.
			done = nil
			for {
				select {
				case m := <-out:
					if err := p.publish([]*message{m}); err != nil {
						return err
					}
					continue
				default:
				}
				break
			}
			finished = true
		case front.ack = <-ackOK:
			front.done = true
		case front.err = <-ackErr:
			front.done = true
		case <-ck.C:
			if p.dirty {
				if err := p.checkpoint(); err != nil {
					return err
				}
			}
		case <-progress:
			fmt.Fprintf(p.cfg.ProgressOut, "ship: %s\n", p.progress())
		}
	}
}

// publish records the messages' ends in the state, saves it (write-ahead, so
// that a restart cuts the same messages), then publishes them.
func (p *publisher) publish(batch []*message) error {
	plan := false
	for _, m := range batch {
		if m.stdin {
			continue
		}
		s := p.files[m.key]
		if m.done {
			if s != nil {
				s.Retired = true
				if len(s.Planned) == 0 {
					delete(p.files, m.key)
				}
				p.dirty = true
			}
			continue
		}
		if s == nil || s.Gen != m.gen || s.FP != m.fp {
			s = &fileState{Path: m.path, Dev: m.id.dev, Ino: m.id.ino, FP: m.fp, Gen: m.gen, Offset: m.start}
			p.files[m.key] = s
		}
		// Ends stay sorted: a restart re-cutting at the saved plan sends
		// ends that are already there.
		if n := len(s.Planned); n == 0 || m.end > s.Planned[n-1] {
			s.Planned = append(s.Planned, m.end)
			plan = true
		}
	}
	if plan && p.cfg.StateFile != "" {
		if err := p.checkpoint(); err != nil {
			return err
		}
	}
	for _, m := range batch {
		if m.done {
			continue
		}
		f := &inflight{m: m, msg: &nats.Msg{Subject: p.cfg.Subject, Data: m.data},
			id: fmt.Sprintf("%s.%s.%d:%d-%d", m.key, m.fp, m.gen, m.start, m.end)}
		if err := p.send(f); err != nil {
			return err
		}
		p.queue = append(p.queue, f)
		p.bytes += len(m.data)
		p.stats.Pending.Add(1)
		p.stats.Messages.Add(1)
		p.stats.Lines.Add(uint64(m.lines))
		p.stats.Bytes.Add(uint64(len(m.data)))
		if m.trunc {
			p.stats.Truncated.Add(1)
		}
	}
	return nil
}

func (p *publisher) send(f *inflight) error {
	f.msg.Header = nil // PublishMsgAsync sets the id headers again
	fut, err := p.js.PublishMsgAsync(f.msg, jetstream.WithMsgID(f.id), jetstream.WithExpectStream(schemas.StreamLogs))
	if err != nil {
		return fmt.Errorf("cannot publish to %q: %w", p.cfg.Subject, err)
	}
	f.fut, f.sent, f.done, f.ack, f.err = fut, time.Now(), false, nil, nil
	if f.tries == 0 {
		f.first = f.sent
	}
	f.tries++
	return nil
}

// GiveUpError is Run's error when a message went unacknowledged for
// Config.GiveUp.
type GiveUpError struct {
	Subject string
	After   time.Duration // since the message was first sent
	Tries   int
	Pending int   // messages in flight, unacknowledged
	Last    error // the last publish error
}

func (e *GiveUpError) Error() string {
	return fmt.Sprintf("cannot publish to %q: no acknowledgement from NATS JetStream for %s (%d attempts, %d messages pending; last error: %v); acknowledged offsets are saved, a rerun resumes",
		e.Subject, e.After.Round(time.Millisecond), e.Tries, e.Pending, e.Last)
}

func (e *GiveUpError) Unwrap() error { return e.Last }

// retryWait is how long f waits after a failure before it is sent again.
func (f *inflight) retryWait() time.Duration {
	return min(retryPause<<min(f.tries-1, 8), maxRetryPause)
}

// giveUp returns a *GiveUpError when f has waited too long, else nil.
func (p *publisher) giveUp(f *inflight, last error) error {
	if p.cfg.GiveUp <= 0 || time.Since(f.first) < p.cfg.GiveUp {
		return nil
	}
	if last == nil {
		last = errors.New("no acknowledgement in time")
	}
	return &GiveUpError{Subject: p.cfg.Subject, After: time.Since(f.first), Tries: f.tries, Pending: len(p.queue), Last: last}
}

// result stores f's outcome if its future has completed, without blocking.
func (f *inflight) result() bool {
	if f.done {
		return true
	}
	select {
	case f.ack = <-f.fut.Ok():
		f.done = true
	case f.err = <-f.fut.Err():
		f.done = true
	default:
	}
	return f.done
}

// reap takes acknowledged messages off the front of the queue and advances
// the acked offsets. A failed publish, or one unacknowledged for AckTimeout,
// is sent again with the same id (the stream drops it if it has it).
func (p *publisher) reap() error {
	for len(p.queue) > 0 {
		f := p.queue[0]
		if !f.result() {
			if err := p.giveUp(f, nil); err != nil {
				return err
			}
			if time.Since(f.sent) < p.cfg.AckTimeout {
				return nil
			}
			f.err = errors.New("no acknowledgement in time")
		}
		if f.err != nil {
			if err := p.giveUp(f, f.err); err != nil {
				return err
			}
			wait := f.retryWait()
			if time.Since(f.sent) < wait {
				return nil // the checkpoint tick comes back
			}
			p.stats.Retries.Add(1)
			if time.Since(p.lastWarn) > retryWarnEvery {
				p.lastWarn = time.Now()
				p.log.Warn("publish failed, retrying", "subject", p.cfg.Subject, "msg_id", f.id, "attempt", f.tries+1,
					"backoff", wait, "failing_for", time.Since(f.first).Round(time.Second), "err", f.err)
			}
			if err := p.send(f); err != nil {
				return err
			}
			return nil
		}
		if f.ack != nil && f.ack.Duplicate {
			p.stats.Duplicates.Add(1)
		}
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.bytes -= len(f.m.data)
		p.stats.Pending.Add(-1)
		p.stats.Acked.Add(1)
		if s := p.files[f.m.key]; s != nil && !f.m.stdin && s.Gen == f.m.gen && s.FP == f.m.fp {
			s.Offset = max(s.Offset, f.m.end)
			i := 0
			for i < len(s.Planned) && s.Planned[i] <= s.Offset {
				i++
			}
			s.Planned = s.Planned[i:]
			if s.Retired && len(s.Planned) == 0 {
				delete(p.files, f.m.key)
			}
			p.dirty = true
		}
	}
	return nil
}

// drain waits for the acks of the messages in flight, at most DrainTimeout.
func (p *publisher) drain() error {
	deadline := time.NewTimer(p.cfg.DrainTimeout)
	defer deadline.Stop()
	for {
		if err := p.reap(); err != nil {
			return err
		}
		if len(p.queue) == 0 {
			return nil
		}
		f := p.queue[0]
		select {
		case <-deadline.C:
			p.log.Warn("stopped before every message was acknowledged; they are re-sent on restart", "pending", len(p.queue))
			return nil
		case f.ack = <-f.fut.Ok():
			f.done = true
		case f.err = <-f.fut.Err():
			f.done = true
		case <-time.After(p.cfg.Poll):
		}
	}
}

// checkpoint saves the state.
func (p *publisher) checkpoint() error {
	p.dirty = false
	if p.cfg.StateFile == "" {
		return nil
	}
	files := make([]*fileState, 0, len(p.files))
	for _, s := range p.files {
		files = append(files, s)
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].Path != files[j].Path {
			return files[i].Path < files[j].Path
		}
		return files[i].Ino < files[j].Ino
	})
	return saveState(p.cfg.StateFile, files)
}

// progress formats the counters and per-file acked offsets.
func (p *publisher) progress() string {
	now := time.Now()
	lines := p.stats.Lines.Load()
	rate := float64(lines-p.last.lines) / max(now.Sub(p.last.at).Seconds(), 1e-9)
	p.last.at, p.last.lines = now, lines
	var b strings.Builder
	fmt.Fprintf(&b, "lines=%d messages=%d bytes=%d lines_per_s=%.0f pending=%d acked=%d duplicates=%d retries=%d truncated=%d rotations=%d truncations=%d",
		lines, p.stats.Messages.Load(), p.stats.Bytes.Load(), rate, p.stats.Pending.Load(), p.stats.Acked.Load(),
		p.stats.Duplicates.Load(), p.stats.Retries.Load(), p.stats.Truncated.Load(), p.stats.Rotations.Load(), p.stats.Truncations.Load())
	keys := make([]string, 0, len(p.files))
	for k := range p.files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s := p.files[k]
		fmt.Fprintf(&b, " %s@%d", s.Path, s.Offset)
	}
	return b.String()
}
