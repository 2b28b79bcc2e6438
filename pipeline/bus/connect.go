package bus

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// dialTimeout bounds one connection attempt.
	dialTimeout = 2 * time.Second
	// minBackoff and maxBackoff bound the wait between (re)connection attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// publishAsyncMaxPending bounds async publishes awaiting a PubAck per
	// JetStream context; a publisher beyond it stalls (back-pressure).
	publishAsyncMaxPending = 8192
)

// Connect dials the NATS server(s) at url (a comma-separated list is allowed)
// and returns the connection and a JetStream context on it.
//
// The first connection is retried with exponential back-off until it succeeds
// or ctx is done; the error then wraps the last dial error. Once connected, the
// connection reconnects forever with jittered back-off (100 ms doubling to 5 s),
// buffering publishes meanwhile, and logs disconnects, reconnects, closure and
// asynchronous errors (such as slow consumers) through log. The caller closes
// the connection (Drain or Close).
func Connect(ctx context.Context, url string, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("nats_name", name)
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(dialTimeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(backoff),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", "error", err)
				return
			}
			log.Debug("nats connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "error", err)
		}),
	}
	var nc *nats.Conn
	var err error
	for attempt := 0; ; attempt++ {
		nc, err = nats.Connect(url, opts...)
		if err == nil {
			break
		}
		log.Warn("cannot connect to nats, retrying", "url", url, "attempt", attempt+1, "error", err)
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("cannot connect to NATS at %q after %d attempts: %w (last error: %w)", url, attempt+1, ctx.Err(), err)
		case <-t.C:
		}
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishAsyncMaxPending))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("cannot create JetStream context on %q: %w", url, err)
	}
	log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
	return nc, js, nil
}

// backoff returns the wait before (re)connection attempt n (0-based):
// 100 ms doubling up to 5 s, with up to 50% jitter so a fleet of clients does
// not reconnect in lock-step.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 6 {
		d = min(minBackoff<<n, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}
