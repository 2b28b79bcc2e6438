// Package ingest turns log messages into events: the first stage of the
// pipeline, in two forms that share one decoding path (Decoder).
//
//	IOTWATCH_LOGS message ─▶ Decoder.Logs (format by subject, record by record, dead letters collected)
//	   ├─▶ one process ('iotwatch run'): each event to its worker (package pipeline)
//	   └─▶ the stateless stage ('iotwatch ingest', Stage): each event into the
//	       Arrow batch of its partition (schemas.PartitionOf) ─▶ IOTWATCH_EVENTS
//	           iotwatch.events.<partition>, Nats-Msg-Id <log seq>.<partition>
//	IOTWATCH_EVENTS message ─▶ Decoder.Arrow ─▶ each event to its worker ('run --source events')
//
// Events keep the ids of the log stream (schemas.EventID of the log
// message's sequence and the record's line) whichever way they travel, so a
// scorer reading IOTWATCH_EVENTS writes the rows, alerts and decisions that
// 'run' writes reading the logs.
//
// One file per concept:
//
//	decode.go  Decoder: the decoding path both forms share, with its dead letters
//	stage.go   Stage: the stateless ingest stage (consume, decode, partition, publish, ack)
package ingest

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unsafe"

	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// Events receives the events a Decoder decodes, one at a time: Next returns
// the Event to decode the next record into (the Decoder resets it), and Done
// says whether it holds an event (true: the receiver takes it; false: it may
// be reused for the next record).
type Events interface {
	Next() *schemas.Event
	Done(ok bool)
}

// Options configure a Decoder.
type Options struct {
	// Formats configures the log decoders; the format and source of each
	// message come from its subject.
	Formats formats.Options
	// MaxLineBytes bounds one record (schemas.DefaultMaxLineBytes if 0).
	MaxLineBytes int
	// Enrich, when set, completes each decoded event (GeoIP: country, ASN,
	// coordinates the log lacks).
	Enrich func(*schemas.Event)
}

// Counts are what one message gave.
type Counts struct {
	Events  int // events handed to Events
	Skipped int // well-formed records without an event (broker keep-alives)
}

// Decoder decodes log messages (any supported format, by subject) and Arrow
// event batches into events, and collects the dead letters of the message
// it decoded last (Letters). It is not safe for concurrent use: give each
// goroutine its own.
type Decoder struct {
	opts     Options
	decoders map[string]subjectDecoder // by subject
	records  [][]byte
	letters  []schemas.DeadLetter
	arrow    *schemas.EventReader
}

type subjectDecoder struct {
	format string
	dec    formats.Decoder
}

// NewDecoder returns a Decoder.
func NewDecoder(o Options) *Decoder {
	return &Decoder{opts: o, decoders: map[string]subjectDecoder{}}
}

// MaxBadLinesPerMessage bounds the dead letters one message produces line by
// line; the rest of such a message is dead-lettered whole (schemas.DeadLetterTooManyBadLines).
const MaxBadLinesPerMessage = 100

// maxDecoders bounds the per-(format, source) decoders kept; beyond it they
// are rebuilt (a Mosquitto decoder then forgets its client addresses).
const maxDecoders = 4096

// Letters returns the dead letters of the last message decoded. Their
// records alias that message's data: publish them before the message is
// acked or its data reused, then call ClearLetters.
func (d *Decoder) Letters() []schemas.DeadLetter { return d.letters }

// ClearLetters drops the dead letters (and their references to the data).
func (d *Decoder) ClearLetters() {
	clear(d.letters)
	d.letters = d.letters[:0]
}

// Logs decodes a log message published on subject
// (iotwatch.logs.<format>.<source>) with stream sequence seq and arrival
// time arrival (the stream's timestamp, Unix ns: it bounds event times):
// each record into an event for out, undecodable ones into Letters. A message
// of too many bad records, or of more than schemas.MaxLinesPerMessage, is
// dead-lettered whole from there on.
func (d *Decoder) Logs(subject string, data []byte, seq uint64, arrival int64, out Events) Counts {
	d.ClearLetters()
	var c Counts
	format, dec, err := d.decoderFor(subject)
	if err != nil {
		d.addDeadLetter(0, &schemas.DecodeError{Reason: schemas.DeadLetterUnknownFormat, Detail: err.Error()}, data)
		return c
	}
	d.records = formats.Records(format, d.records[:0], data)
	bad := 0
	for i, rec := range d.records {
		if bad == MaxBadLinesPerMessage || i >= schemas.MaxLinesPerMessage {
			// A message of garbage must not cost one dead letter per line: its
			// rest goes to the DLQ whole (cut to sink.MaxDeadLetterRecord),
			// from this record on.
			reason, detail := schemas.DeadLetterTooManyBadLines, fmt.Sprintf("%d undecodable records; the rest of the message from this one on is kept here whole", bad)
			if bad < MaxBadLinesPerMessage {
				reason, detail = schemas.DeadLetterTooManyLines, fmt.Sprintf("a message may carry at most %d records", schemas.MaxLinesPerMessage)
			}
			d.addDeadLetter(uint32(i), &schemas.DecodeError{Reason: reason, Detail: detail}, rest(data, rec))
			break
		}
		ev := out.Next()
		if err := dec.Decode(rec, seq, uint32(i), arrival, ev); err != nil {
			out.Done(false)
			if err == formats.ErrSkip {
				c.Skipped++
				continue
			}
			d.addDeadLetter(uint32(i), err, rec)
			bad++
			continue
		}
		if d.opts.Enrich != nil {
			d.opts.Enrich(ev)
		}
		out.Done(true)
		c.Events++
	}
	d.records = d.records[:0]
	return c
}

// Arrow decodes an Arrow event batch (one IPC stream of
// schemas.EventArrowSchema, as the ingest stage publishes on
// iotwatch.events.<partition>) into events for out. A batch that cannot be
// read is one dead letter (schemas.DeadLetterBadArrow) holding the whole
// message; a row that is not a valid event is a dead letter whose line is
// the row (and whose record is empty: the row has no text of its own).
func (d *Decoder) Arrow(data []byte, out Events) Counts {
	d.ClearLetters()
	var c Counts
	if d.arrow == nil {
		d.arrow = schemas.NewEventReader(nil)
	}
	r := d.arrow
	defer r.Close()
	if err := r.Open(data); err != nil {
		d.addDeadLetter(0, &schemas.DecodeError{Reason: schemas.DeadLetterBadArrow, Detail: err.Error()}, data)
		return c
	}
	for row := uint32(0); ; row++ {
		ev := out.Next()
		err := r.Next(ev)
		if err == nil {
			if d.opts.Enrich != nil {
				d.opts.Enrich(ev)
			}
			out.Done(true)
			c.Events++
			continue
		}
		out.Done(false)
		var de *schemas.DecodeError
		switch {
		case err == io.EOF:
			return c
		case errors.As(err, &de):
			d.addDeadLetter(row, err, nil)
		default: // the rest of the stream is unreadable
			d.addDeadLetter(row, &schemas.DecodeError{Reason: schemas.DeadLetterBadArrow, Detail: err.Error()}, data)
			return c
		}
	}
}

// addDeadLetter adds record line of the message being decoded to its dead
// letters, with the reason err gives (a *schemas.DecodeError) or
// DeadLetterUndecodable.
func (d *Decoder) addDeadLetter(line uint32, err error, record []byte) {
	reason, detail := schemas.DeadLetterUndecodable, err.Error()
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		reason, detail = de.Reason, de.Detail
	}
	d.letters = append(d.letters, schemas.DeadLetter{Line: line, Reason: reason, Detail: detail, Size: len(record), Record: record})
}

// rest returns data from rec on; rec is a subslice of data (formats.Records).
func rest(data, rec []byte) []byte {
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(rec))) - uintptr(unsafe.Pointer(unsafe.SliceData(data))))
	if off < 0 || off > len(data) {
		return data // not a subslice: keep the whole message
	}
	return data[off:]
}

// decoderFor returns the format named by a subject iotwatch.logs.<format>.<source>
// and that stream's decoder (one per source: some formats keep per-stream state).
func (d *Decoder) decoderFor(subject string) (string, formats.Decoder, error) {
	if sd, ok := d.decoders[subject]; ok {
		return sd.format, sd.dec, nil
	}
	rest, ok := strings.CutPrefix(subject, schemas.SubjectLogsPrefix+".")
	if !ok {
		return "", nil, fmt.Errorf("subject %q is not under %s", subject, schemas.SubjectLogsAll)
	}
	format, source, _ := strings.Cut(rest, ".")
	o := d.opts.Formats
	o.Source = source
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = d.opts.MaxLineBytes
	}
	dec, err := formats.New(format, o)
	if err != nil {
		return "", nil, err
	}
	if len(d.decoders) >= maxDecoders {
		clear(d.decoders)
	}
	d.decoders[subject] = subjectDecoder{format: format, dec: dec}
	return format, dec, nil
}
