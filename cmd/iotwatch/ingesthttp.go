package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/iotwatch/iotwatch/internal/ship"
	"github.com/iotwatch/iotwatch/schemas"
)

func ingestHTTPCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ingest-http", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		natsURL  = fs.String("nats", defaultNATS, "NATS server URL(s), comma-separated")
		listen   = fs.String("listen", "127.0.0.1:9182", "address to serve POST /logs/<format>/<source> on")
		maxBody  = fs.Int64("max-body", 0, "largest request body in bytes (default: the NATS server's max payload less 4 KiB)")
		timeout  = fs.Duration("publish-timeout", 5*time.Second, "how long a push waits for JetStream's ack before it is answered 503")
		logLevel = fs.String("log-level", "info", "log level: debug, info, warn or error")
		conn     connFlags
	)
	conn.registerNATS(fs, schemas.InboxShipper)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch ingest-http [flags]

Receives log pushes over HTTP, such as Kong's http-log plugin (config.http_endpoint:
http://HOST:9182/logs/kong/<source>), and publishes each request body (one JSON
object, a JSON array as Kong's batch queue sends, or newline-separated records) as
one message to iotwatch.logs.<format>.<source>. A push is answered 204 once
JetStream has acknowledged it, 503 otherwise (Kong retries), 413 over --max-body.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *maxBody < 0 {
		return usageError{fmt.Errorf("cannot use --max-body %d: must be >= 0", *maxBody)}
	}
	if *timeout <= 0 {
		return usageError{fmt.Errorf("cannot use --publish-timeout %s: must be > 0", *timeout)}
	}
	log, err := newLogger(os.Stderr, *logLevel)
	if err != nil {
		return err
	}
	nc, js, err := conn.connectNATS(ctx, *natsURL, "iotwatch-ingest-http", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	limit := ship.MaxBodyFor(nc.MaxPayload())
	if *maxBody > 0 {
		limit = min(*maxBody, limit)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return usageError{fmt.Errorf("cannot use --listen %q: %w", *listen, err)}
	}
	rc := &ship.Receiver{JS: js, MaxBody: limit, PublishTimeout: *timeout, Log: log}
	srv := &http.Server{Handler: rc.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("receiving log pushes", "listen", ln.Addr().String(), "max_body", limit)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("cannot serve --listen %q: %w", *listen, err)
	}
	return nil
}
