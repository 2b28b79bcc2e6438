package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/internal/inspect"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

func inspectCmd(ctx context.Context, args []string, stdout io.Writer) error {
	return inspectMain(ctx, args, stdout, os.Stderr, os.Stdin)
}

// inspectMain is inspectCmd with stderr and stdin replaceable (tests).
func inspectMain(ctx context.Context, args []string, stdout, stderr io.Writer, stdin io.Reader) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		natsURL  = fs.String("nats", defaultNATS, "NATS server URL(s), comma-separated (with --subject)")
		format   = fs.String("format", "", "log format of FILE: "+strings.Join(formats.Names(), ", ")+"; with --subject, overrides the <format> token of each message's subject")
		subject  = fs.String("subject", "", "read this subject (wildcards allowed, e.g. iotwatch.logs.mosquitto.>) from the stream holding it, without consuming")
		last     = fs.Int("last", 0, "with --subject: only the last N messages (0: all)")
		follow   = fs.Bool("follow", false, "with --subject: keep printing new messages until interrupted")
		skipped  = fs.Bool("skipped", false, "also print the records a decoder deliberately ignores (keep-alives, start-up lines)")
		identity = fs.String("identity", "auto", "how devices are identified, as 'iotwatch run --identity'")
		tz       = fs.String("log-time-zone", "", "zone of log times written without one, as 'iotwatch run --log-time-zone'")
		keyFile  = fs.String("key-secret-file", "", "file with the secret that keys API key hashes, as 'iotwatch run'")
		logLevel = fs.String("log-level", "warn", "log level: debug, info, warn or error")
		conn     connFlags
	)
	conn.registerNATS(fs, schemas.InboxAnalyst)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch inspect --format F FILE (or - for stdin)
       iotwatch inspect --subject SUBJECT [--last N] [--follow]

Prints what iotwatch makes of a log, with the pipeline's decoders: one line per
record, the decoded event as canonical JSON, or {"dead_letter":{"reason":...,
"detail":...,"record":...}} for a record the pipeline would dead-letter. With
--subject, it reads a NATS subject through an ephemeral ordered consumer: nothing
is acked or consumed, the pipeline is not disturbed. --subject 'iotwatch.dlq.>'
prints what the pipeline dead-lettered, one dead_letter line per record (with
"size" when the stored record is cut). A summary goes to stderr.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	bad := func(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }
	o := formats.Options{Identity: *identity, TimeZone: *tz}
	if *keyFile != "" {
		var err error
		if o.KeySecret, err = readKeySecret(*keyFile); err != nil {
			return bad("cannot use --key-secret-file: %w", err)
		}
	}
	switch {
	case (*subject == "") == (fs.NArg() == 0):
		return bad("cannot inspect: give either FILE or --subject")
	case fs.NArg() > 1:
		return bad("cannot inspect %d files: give one FILE", fs.NArg())
	case *subject == "" && *format == "":
		return bad("cannot inspect FILE without --format")
	case *last < 0:
		return bad("cannot use --last %d: must be >= 0", *last)
	}
	for _, f := range []struct {
		field string
		opts  formats.Options
	}{{"identity", formats.Options{Identity: o.Identity}}, {"log-time-zone", o}} {
		if _, err := formats.New(schemas.FormatMosquitto, f.opts); err != nil {
			return bad("cannot use --%s: %w", f.field, err)
		}
	}
	if *format != "" {
		if _, err := formats.New(*format, formats.Options{}); err != nil {
			return bad("cannot use --format: %w", err)
		}
	}
	p := &inspect.Printer{Format: *format, Options: o, Skipped: *skipped, W: stdout}
	defer func() {
		fmt.Fprintf(stderr, "inspected: %d events, %d dead letters, %d records without an event\n", p.Events, p.DeadLetters, p.Skips)
	}()
	if *subject == "" {
		in := stdin
		if name := fs.Arg(0); name != "-" {
			f, err := os.Open(name)
			if err != nil {
				return fmt.Errorf("cannot open %q: %w", name, err)
			}
			defer f.Close()
			in = f
		}
		return p.Reader(in, time.Now().UnixNano(), schemas.DefaultMaxLineBytes*2)
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	nc, js, err := conn.connectNATS(ctx, *natsURL, "iotwatch-inspect", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	return p.Subject(ctx, js, inspect.SubjectOptions{Subject: *subject, Last: *last, Follow: *follow})
}
