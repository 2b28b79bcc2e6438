package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/schemas"
)

// replayRecord is one line of replay's output: an alert, a decision or an
// incident.
type replayRecord struct {
	Kind string `json:"kind"` // "alert", "decision" or "incident"
	*schemas.Alert
	Decision *schemas.Decision `json:"decision,omitempty"`
	Incident *schemas.Incident `json:"incident,omitempty"`
}

func replayCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	o.register(fs, "", "")
	format := fs.String("format", schemas.FormatJSON, "input format: "+strings.Join(formats.Names(), ", ")+" (json: canonical JSON lines, see schemas/codec.go)")
	out := fs.String("out", "-", "write alerts and decisions here as JSON lines; - is standard output")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch replay [flags] FILE...

Runs recorded access logs through the same decode → detectors → decide code as the live
pipeline, in one process, at full speed on event time, without NATS or ClickHouse, and
writes every alert and decision as one JSON object per line ({"kind":"alert",...} with
time, device, severity, score and reasons with observed and expected values, or
{"kind":"decision","decision":{...}} with scope, action, value and expiry), and the
incidents the alerts make, grouped as 'iotwatch run' groups them (alerts sharing a device,
client IP, /24 or /48, API key or entity, or the same reason on the same command within
minutes: pipeline/incident), each once in its final state when it closes (after its idle
gap of event time, or at the end): {"kind":"incident","incident":{...}} with first and
last seen, devices, entities, reasons, severity and decisions. Use it to
backtest a configuration or a detector change on last week's traffic. Silent devices
are swept every minute of event time, as in 'iotwatch run' (a silence alone scores below
the alert threshold). FILE - reads standard input. Lines that do not decode are counted
and reported on standard error, with a summary line of records decoded and dead-lettered
(and the most frequent reasons); when no record decodes, the exit status is 1.

Flags (the detector and decision flags of 'iotwatch run' apply; connection flags are ignored):
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{fmt.Errorf("no input FILE given (use - for standard input)")}
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	fo := cfg.Formats
	fo.Source = "replay"
	dec, err := formats.New(*format, fo)
	if err != nil {
		return usageError{fmt.Errorf("cannot use --format: %w", err)}
	}
	st, err := eval.NewReplayStack(cfg)
	if err != nil {
		return err
	}
	dst := stdout
	if *out != "-" {
		f, err := os.Create(*out)
		if err != nil {
			return fmt.Errorf("cannot create --out %q: %w", *out, err)
		}
		defer f.Close()
		dst = f
	}
	bw := bufio.NewWriterSize(dst, 64<<10)
	r := &replayer{st: st, format: *format, dec: dec, enc: json.NewEncoder(bw), errw: os.Stderr, start: time.Now(),
		incidents: incident.New(cfg.Incidents)}
	r.incidents.OnClose(r.closed)
	for i, name := range fs.Args() {
		if err := r.file(ctx, uint64(i), name); err != nil {
			return err
		}
	}
	r.incidents.Close()
	if r.err != nil {
		return r.err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cannot write --out %q: %w", *out, err)
	}
	fmt.Fprintf(r.errw, "replayed %d events (%d undecodable records, %d without an event) in %.1fs: %d alerts, %d decisions, %d incidents, %d silences swept\n",
		r.events, r.bad, r.skip, time.Since(r.start).Seconds(), r.alerts, r.decisions, r.nIncidents, r.silences)
	top := r.topReasons()
	if top != "" {
		top = " (" + top + ")"
	}
	fmt.Fprintf(r.errw, "decoded %d, dead-lettered %d%s\n", r.events, r.bad, top)
	if r.events == 0 {
		if r.bad > 0 {
			return fmt.Errorf("cannot replay %q: none of its %d records decoded as --format %q; top reasons: %s",
				strings.Join(fs.Args(), " "), r.bad, *format, r.topReasons())
		}
		return fmt.Errorf("cannot replay %q: no records", strings.Join(fs.Args(), " "))
	}
	return nil
}

// maxTopReasons is how many dead-letter reasons replay's summary names.
const maxTopReasons = 3

// topReasons is "reason n, reason n, ..." for the most frequent dead-letter
// reasons, or "" when nothing was dead-lettered.
func (r *replayer) topReasons() string {
	if len(r.badReasons) == 0 {
		return ""
	}
	reasons := make([]string, 0, len(r.badReasons))
	for k := range r.badReasons {
		reasons = append(reasons, k)
	}
	sort.Slice(reasons, func(i, j int) bool {
		a, b := reasons[i], reasons[j]
		return r.badReasons[a] > r.badReasons[b] || (r.badReasons[a] == r.badReasons[b] && a < b)
	})
	var sb strings.Builder
	for i, k := range reasons[:min(len(reasons), maxTopReasons)] {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s %d", k, r.badReasons[k])
	}
	if len(reasons) > maxTopReasons {
		sb.WriteString(", ...")
	}
	return sb.String()
}

type replayer struct {
	st                 *eval.ReplayStack
	format             string
	dec                formats.Decoder
	recs               [][]byte
	enc                *json.Encoder
	errw               io.Writer
	ev                 schemas.Event
	sc                 schemas.Scored
	start              time.Time
	events, bad, skip  int
	silences           int // silent devices the sweep reported
	alerts, decisions  int
	incidents          *incident.Grouper
	nIncidents         int
	err                error // the first error writing a closed incident
	reportedBadReasons int
	badReasons         map[string]int // dead-letter reason -> undecodable records
}

// record replays one record; seq and lineNo derive its event id.
func (r *replayer) record(name string, seq uint64, lineNo uint32, rec []byte) error {
	if err := r.dec.Decode(rec, seq, lineNo, 0, &r.ev); err != nil {
		if err == formats.ErrSkip {
			r.skip++
			return nil
		}
		r.bad++
		reason := schemas.DeadLetterUndecodable
		if de, ok := errors.AsType[*schemas.DecodeError](err); ok {
			reason = de.Reason
		}
		if r.badReasons == nil {
			r.badReasons = map[string]int{}
		}
		r.badReasons[reason]++
		if r.reportedBadReasons < maxBadReported {
			r.reportedBadReasons++
			fmt.Fprintf(r.errw, "%s:%d: %v\n", name, seq&(1<<32-1), err)
		}
		return nil
	}
	r.events++
	var err error
	r.silences += r.st.Score(&r.ev, &r.sc, func(alert *schemas.Alert, d *schemas.Decision) {
		if err == nil {
			err = r.write(alert, d)
		}
	})
	if r.err != nil {
		return r.err
	}
	return err
}

// closed writes an incident that closed.
func (r *replayer) closed(inc *schemas.Incident) {
	r.nIncidents++
	if err := r.enc.Encode(replayRecord{Kind: "incident", Incident: inc}); err != nil && r.err == nil {
		r.err = fmt.Errorf("cannot write output: %w", err)
	}
}

// write writes an alert and a decision (either may be nil), and groups the
// alert into its incident.
func (r *replayer) write(alert *schemas.Alert, d *schemas.Decision) error {
	if alert != nil {
		decID := ""
		if d != nil && d.AlertID == alert.ID {
			decID = d.ID
		}
		r.incidents.Add(alert, decID)
		r.alerts++
		if err := r.enc.Encode(replayRecord{Kind: "alert", Alert: alert}); err != nil {
			return fmt.Errorf("cannot write output: %w", err)
		}
	}
	if d != nil {
		r.decisions++
		if err := r.enc.Encode(replayRecord{Kind: "decision", Decision: d}); err != nil {
			return fmt.Errorf("cannot write output: %w", err)
		}
	}
	return nil
}

// maxBadReported bounds the undecodable lines reported one by one.
const maxBadReported = 10

// file replays one file. Event ids derive from the file's index and the line
// number, so a replay is deterministic.
func (r *replayer) file(ctx context.Context, index uint64, name string) error {
	in := os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("cannot open %q: %w", name, err)
		}
		defer f.Close()
		in = f
	}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var line uint32
	for sc.Scan() {
		if r.events&0xffff == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		line++
		r.recs = formats.Records(r.format, r.recs[:0], sc.Bytes())
		for i, rec := range r.recs {
			if err := r.record(name, index<<32|uint64(line), uint32(i), rec); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("cannot read %q after line %d: %w", name, line, err)
	}
	return nil
}
