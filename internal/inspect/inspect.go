// Package inspect shows what iotwatch makes of a log: every record of a file
// or of a NATS subject decoded by the pipeline's decoders, printed as the
// canonical JSON event (one per line) or as the dead letter it would become,
// with its reason. It reads and never consumes: a subject is read through an
// ephemeral ordered consumer, so the pipeline's durable consumer and acks are
// untouched. The dead-letter stream reads the same way: the entries of its
// messages (schemas.ParseDeadLetters) are printed as dead letters. `iotwatch
// inspect` is its command.
package inspect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// Printer decodes records and writes one JSON line per record to W:
//
//	{...}                                                   a decoded event (schemas.AppendJSON)
//	{"dead_letter":{"reason":"malformed_line","detail":"...","subject":"...","seq":7,"line":2,"record":"..."}}
//	{"dead_letter":{...,"record":"...","size":9000}}       a stored dead letter whose record was cut: its whole length
//	{"skipped":{"subject":"...","seq":7,"line":3,"record":"..."}}   only with Skipped: a record with no event
//
// Counts say how many of each it wrote. A Printer is not safe for concurrent use.
type Printer struct {
	// Format decodes every record; empty takes it from each message's
	// subject (iotwatch.logs.<format>.<source>).
	Format string
	// Options configure the decoders (Source is set from the subject, or "inspect").
	Options formats.Options
	// Skipped also prints the records a decoder deliberately ignores.
	Skipped bool
	W       io.Writer

	Events, DeadLetters, Skips int

	decoders map[string]formats.Decoder // by subject: some decoders keep per-stream state
	recs     [][]byte
	letters  []schemas.DeadLetter
	buf      []byte
	ev       schemas.Event
}

// Message decodes the records of one message (a file counts as one message
// per line, seq = line number) received at now (Unix ns) on subject ("" for a file).
func (p *Printer) Message(subject string, seq uint64, msg []byte, now int64) error {
	format, dec, err := p.decoder(subject)
	if err != nil {
		p.buf = p.deadLetter(p.buf[:0], schemas.DeadLetterUnknownFormat, err.Error(), subject, seq, 0, msg, len(msg))
		return p.flush()
	}
	p.recs = formats.Records(format, p.recs[:0], msg)
	for i, rec := range p.recs {
		err := dec.Decode(rec, seq, uint32(i), now, &p.ev)
		var de *schemas.DecodeError
		switch {
		case err == nil:
			p.Events++
			p.buf = append(schemas.AppendJSON(p.buf, &p.ev), '\n')
		case errors.Is(err, formats.ErrSkip):
			if !p.Skipped {
				p.Skips++
				continue
			}
			p.Skips++
			p.buf = append(p.buf, `{"skipped":{"subject":`...)
			p.buf = schemas.AppendQuoted(p.buf, []byte(subject))
			p.buf = fmt.Appendf(p.buf, `,"seq":%d,"line":%d,"record":`, seq, i)
			p.buf = schemas.AppendQuoted(p.buf, rec)
			p.buf = append(p.buf, "}}\n"...)
		case errors.As(err, &de):
			p.buf = p.deadLetter(p.buf, de.Reason, de.Detail, subject, seq, i, rec, len(rec))
		default:
			p.buf = p.deadLetter(p.buf, schemas.DeadLetterUndecodable, err.Error(), subject, seq, i, rec, len(rec))
		}
		if len(p.buf) > 64<<10 {
			if err := p.flush(); err != nil {
				return err
			}
		}
	}
	return p.flush()
}

// DeadLetterMessage prints the entries of a message of the dead-letter stream
// (IOTWATCH_DLQ) with headers h, each with the log message it came from.
// A message without schemas.HeaderDLQCount is of the earlier shape: one
// record as its payload.
func (p *Printer) DeadLetterMessage(h nats.Header, body []byte) error {
	seq, _ := strconv.ParseUint(h.Get(schemas.HeaderDLQSequence), 10, 64)
	subject, reason := h.Get(schemas.HeaderDLQSubject), h.Get(schemas.HeaderDLQReason)
	if h.Get(schemas.HeaderDLQCount) == "" {
		line, _ := strconv.Atoi(h.Get(schemas.HeaderDLQLine))
		p.buf = p.deadLetter(p.buf, reason, h.Get(schemas.HeaderDLQDetailV1), subject, seq, line, body, len(body))
		return p.flush()
	}
	var err error
	p.letters, err = schemas.ParseDeadLetters(p.letters[:0], body, reason)
	if err != nil {
		return fmt.Errorf("cannot read a dead-letter message of %q: %w", subject, err)
	}
	for _, d := range p.letters {
		p.buf = p.deadLetter(p.buf, d.Reason, d.Detail, subject, seq, int(d.Line), d.Record, d.Size)
	}
	clear(p.letters)
	return p.flush()
}

// deadLetter appends the line of a dead letter; size is the whole record's
// length, printed when rec is only its beginning.
func (p *Printer) deadLetter(dst []byte, reason, detail, subject string, seq uint64, line int, rec []byte, size int) []byte {
	p.DeadLetters++
	dst = append(dst, `{"dead_letter":{"reason":`...)
	dst = schemas.AppendQuoted(dst, []byte(reason))
	dst = append(dst, `,"detail":`...)
	dst = schemas.AppendQuoted(dst, []byte(detail))
	dst = append(dst, `,"subject":`...)
	dst = schemas.AppendQuoted(dst, []byte(subject))
	dst = fmt.Appendf(dst, `,"seq":%d,"line":%d,"record":`, seq, line)
	dst = schemas.AppendQuoted(dst, rec)
	if size > len(rec) {
		dst = fmt.Appendf(dst, `,"size":%d`, size)
	}
	return append(dst, "}}\n"...)
}

func (p *Printer) flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	_, err := p.W.Write(p.buf)
	p.buf = p.buf[:0]
	if err != nil {
		return fmt.Errorf("cannot write the output: %w", err)
	}
	return nil
}

// decoder returns the format and decoder for subject's messages.
func (p *Printer) decoder(subject string) (string, formats.Decoder, error) {
	if d, ok := p.decoders[subject]; ok {
		return p.formatOf(subject), d, nil
	}
	format := p.formatOf(subject)
	if format == "" {
		return "", nil, fmt.Errorf("cannot choose a format for subject %q: it is not %s.<format>.<source>; give --format", subject, schemas.SubjectLogsPrefix)
	}
	o := p.Options
	o.Source = "inspect"
	if rest, ok := strings.CutPrefix(subject, schemas.SubjectLogsPrefix+"."); ok {
		if _, src, ok := strings.Cut(rest, "."); ok {
			o.Source = src
		}
	}
	d, err := formats.New(format, o)
	if err != nil {
		return "", nil, err
	}
	if p.decoders == nil {
		p.decoders = make(map[string]formats.Decoder)
	}
	p.decoders[subject] = d
	return format, d, nil
}

func (p *Printer) formatOf(subject string) string {
	if p.Format != "" {
		return p.Format
	}
	rest, ok := strings.CutPrefix(subject, schemas.SubjectLogsPrefix+".")
	if !ok {
		return ""
	}
	format, _, _ := strings.Cut(rest, ".")
	return format
}

// Reader prints every line of r as a record (seq is the 1-based line
// number), with now as the arrival time. Lines longer than maxLine are
// dead-lettered by the decoder's limit; maxLine bounds what is read at all.
func (p *Printer) Reader(r io.Reader, now int64, maxLine int) error {
	if p.Format == "" {
		return errors.New("cannot inspect a file without a format: give --format")
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var seq uint64
	for sc.Scan() {
		seq++
		if err := p.Message("", seq, sc.Bytes(), now); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read line %d: %w", seq+1, err)
	}
	return nil
}

// SubjectOptions say what part of a stream to read.
type SubjectOptions struct {
	// Subject filters the stream (wildcards allowed: iotwatch.logs.mosquitto.>).
	Subject string
	// Last reads only the last Last messages (0: from the start of the stream).
	Last int
	// Follow keeps reading new messages until ctx ends; without it, Subject
	// returns once it has read what the stream held when it began.
	Follow bool
}

// Subject prints the messages of o.Subject in the stream that holds it,
// read through an ephemeral ordered consumer (nothing is acked or consumed).
func (p *Printer) Subject(ctx context.Context, js jetstream.JetStream, o SubjectOptions) error {
	name, err := js.StreamNameBySubject(ctx, o.Subject)
	if err != nil {
		return fmt.Errorf("cannot find the stream of subject %q: %w", o.Subject, err)
	}
	stream, err := js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("cannot read stream %q: %w", name, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{o.Subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if o.Last > 0 {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(o.Subject))
		if err != nil {
			return fmt.Errorf("cannot read stream %q: %w", name, err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		if n > uint64(o.Last) {
			return p.read(ctx, stream, cfg, o.Follow, n-uint64(o.Last)) // read past the surplus
		}
	}
	return p.read(ctx, stream, cfg, o.Follow, 0)
}

func (p *Printer) read(ctx context.Context, stream jetstream.Stream, cfg jetstream.OrderedConsumerConfig, follow bool, skip uint64) error {
	cons, err := stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cannot create an ordered consumer: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("cannot read the consumer: %w", err)
	}
	if !follow && info.NumPending == 0 {
		return nil
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("cannot fetch: %w", err)
		}
		for m := range batch.Messages() {
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("cannot read message metadata: %w", err)
			}
			if skip > 0 {
				skip--
			} else if strings.HasPrefix(m.Subject(), schemas.SubjectDLQPrefix+".") {
				if err := p.DeadLetterMessage(m.Headers(), m.Data()); err != nil {
					return err
				}
			} else if err := p.Message(m.Subject(), md.Sequence.Stream, m.Data(), md.Timestamp.UnixNano()); err != nil {
				return err
			}
			if !follow && md.NumPending == 0 {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("cannot fetch: %w", err)
		}
	}
}
