package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/ship"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// payloadHeadroom is left under the server's max payload for headers.
const payloadHeadroom = 4 << 10

// defaultShipGiveUp is how long 'ship --once' waits for NATS before it fails.
const defaultShipGiveUp = time.Minute

func shipCmd(ctx context.Context, args []string, stdout io.Writer) error {
	return shipMain(ctx, args, stdout, os.Stderr, nil)
}

// shipMain is shipCmd with the progress writer and stdin replaceable (tests).
func shipMain(ctx context.Context, args []string, stdout, stderr io.Writer, stdin *os.File) error {
	fs := flag.NewFlagSet("ship", flag.ContinueOnError)
	fs.SetOutput(stdout)
	d := ship.DefaultConfig()
	var (
		natsURL  = fs.String("nats", defaultNATS, "NATS server URL(s), comma-separated")
		format   = fs.String("format", schemas.FormatJSON, "log format: the <format> token of the subject, which selects the pipeline's decoder")
		source   = fs.String("source", hostname(), "source id: the <source> token of the subject (gateway or broker name)")
		follow   = fs.Bool("follow", true, "keep reading files as they grow, across rotation and truncation, until interrupted")
		once     = fs.Bool("once", false, "read every input to its end, wait for the acks and exit (same as --follow=false)")
		lines    = fs.Int("lines", d.Lines, "lines per message at most")
		maxBytes = fs.Int("max-bytes", d.MaxBytes, "bytes per message at most; a longer line is sent alone, cut to the server's max payload")
		state    = fs.String("state", "", "checkpoint file of acked offsets (default: iotwatch/ship-<hash of inputs>.state under the user cache dir; \"none\" disables)")
		pending  = fs.Int("max-pending", d.MaxPending, "messages published and not yet acknowledged at most; reading pauses beyond")
		poll     = fs.Duration("poll", d.Poll, "how often followed files are checked for new data, rotation and truncation")
		rotWait  = fs.Duration("rotate-wait", d.RotateWait, "keep reading a rotated file until it has not grown for this long")
		progress = fs.Duration("progress", 5*time.Second, "write a progress line to stderr this often (0: only the final summary)")
		logLevel = fs.String("log-level", "info", "log level: debug, info, warn or error")
		giveUp   = fs.Duration("give-up", defaultShipGiveUp, "with --once (or --follow=false): fail when NATS cannot be reached, or does not acknowledge a message, for this long (0: retry forever); following, NATS is retried forever with back-off")
		conn     connFlags
	)
	conn.registerNATS(fs, schemas.InboxShipper)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch ship [flags] FILE... (or - for stdin)

Follows log files (or reads stdin) and publishes their lines to JetStream
stream IOTWATCH_LOGS on iotwatch.logs.<format>.<source>, several lines per
message, with asynchronous publishes and a bound on those awaiting an ack.

Files are followed across rotation (the path names a new file: the old one is
read to its end first) and truncation (read again from the start). Offsets
acknowledged by the server are checkpointed in --state; a restart resumes
there. Every message carries a Nats-Msg-Id naming its byte range of its file,
so what a restart sends again is dropped by the stream's duplicate window: no
line is lost, none is stored twice. stdin has no checkpoint.

The stream must exist: 'iotwatch run' creates it. ship never changes it.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	bad := func(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }
	cfg := d
	cfg.Inputs = fs.Args()
	cfg.Follow = *follow && !*once
	cfg.Lines, cfg.MaxBytes, cfg.MaxPending, cfg.Poll, cfg.RotateWait = *lines, *maxBytes, *pending, *poll, *rotWait
	switch {
	case len(cfg.Inputs) == 0:
		return bad("cannot ship: no input; name files, or - for stdin")
	case *lines <= 0:
		return bad("cannot use --lines %d: must be > 0", *lines)
	case *maxBytes <= 0:
		return bad("cannot use --max-bytes %d: must be > 0", *maxBytes)
	case *pending <= 0:
		return bad("cannot use --max-pending %d: must be > 0", *pending)
	case *poll <= 0:
		return bad("cannot use --poll %s: must be > 0", *poll)
	case *rotWait < 0:
		return bad("cannot use --rotate-wait %s: must be >= 0", *rotWait)
	case *progress < 0:
		return bad("cannot use --progress %s: must be >= 0", *progress)
	case *giveUp < 0:
		return bad("cannot use --give-up %s: must be >= 0", *giveUp)
	case *format == "":
		return bad("cannot use --format \"\": must name a format")
	case *source == "":
		return bad("cannot use --source \"\": must name the source")
	}
	cfg.Subject = bus.LogSubject(*format, *source)
	switch *state {
	case "none":
		cfg.StateFile = ""
	case "":
		p, err := defaultStatePath(cfg.Inputs)
		if err != nil {
			return err
		}
		cfg.StateFile = p
	default:
		cfg.StateFile = *state
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg.Log, cfg.Stdin = log, stdin
	cfg.Progress, cfg.ProgressOut = *progress, stderr
	connectCtx := ctx
	if !cfg.Follow && *giveUp > 0 {
		cfg.GiveUp = *giveUp
		var cancel context.CancelFunc
		connectCtx, cancel = context.WithTimeout(ctx, *giveUp)
		defer cancel()
	}
	nc, js, err := conn.connectNATS(connectCtx, *natsURL, "iotwatch-ship", log)
	if err != nil {
		if ctx.Err() == nil && connectCtx.Err() != nil {
			return fmt.Errorf("cannot ship: NATS unreachable for %s (--give-up): %w", *giveUp, err)
		}
		return err // names the (redacted) URL and, for auth/TLS refusals, the flags to check
	}
	defer nc.Close()
	cfg.MaxLine = int(nc.MaxPayload()) - payloadHeadroom
	if cfg.MaxBytes > cfg.MaxLine {
		return bad("cannot use --max-bytes %d: the server at --nats %q accepts messages up to %d bytes (%d with headers)", cfg.MaxBytes, *natsURL, cfg.MaxLine, nc.MaxPayload())
	}
	cfg.MaxPendingBytes = max(cfg.MaxPendingBytes, cfg.MaxLine)
	if _, err := js.Stream(ctx, schemas.StreamLogs); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("cannot ship: stream %q does not exist on --nats %q; start 'iotwatch run' once, it creates the streams", schemas.StreamLogs, *natsURL)
		}
		return fmt.Errorf("cannot look up stream %q on --nats %q: %w", schemas.StreamLogs, *natsURL, err)
	}
	log.Info("shipping", "inputs", cfg.Inputs, "subject", cfg.Subject, "follow", cfg.Follow, "state", cfg.StateFile)
	var st ship.Stats
	if err := ship.Run(ctx, js, cfg, &st); err != nil {
		return err
	}
	return nil
}

// defaultStatePath is the state file for a set of inputs under the user
// cache directory, named by a hash of their absolute paths; "" for stdin only.
func defaultStatePath(inputs []string) (string, error) {
	h := uint64(14695981039346656037)
	files := 0
	for _, in := range inputs {
		if in == ship.Stdin {
			continue
		}
		abs, err := filepath.Abs(in)
		if err != nil {
			return "", fmt.Errorf("cannot resolve %q: %w", in, err)
		}
		files++
		for i := 0; i < len(abs); i++ {
			h = (h ^ uint64(abs[i])) * 1099511628211
		}
		h = (h ^ 0) * 1099511628211
	}
	if files == 0 {
		return "", nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", usageError{fmt.Errorf("cannot find a place for the state file (%v); set --state", err)}
	}
	return filepath.Join(dir, "iotwatch", fmt.Sprintf("ship-%016x.state", h)), nil
}
