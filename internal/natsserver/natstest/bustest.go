// Package natstest gives a test an embedded NATS JetStream server with the
// iotwatch streams, consumer and KV bucket, like net/http/httptest does for
// HTTP servers. A failure to start fails the test; it never skips.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
)

// setupTimeout bounds starting, connecting and creating the streams.
const setupTimeout = 20 * time.Second

// Env is a running embedded server, a connection to it and what bus.Ensure
// created with bus.DefaultStreamsConfig.
type Env struct {
	Server   *natsserver.Server
	NC       *nats.Conn
	JS       jetstream.JetStream
	Consumer jetstream.Consumer // the pipeline's durable consumer of the logs stream
	KV       jetstream.KeyValue // the active-decisions bucket
}

// Start starts an embedded server with o, connects to it and ensures the
// default streams. The connection and the server are closed when tb ends
// (Server.Shutdown may also be called earlier).
func Start(tb testing.TB, o natsserver.Options) *Env {
	tb.Helper()
	srv, err := natsserver.Start(o)
	if err != nil {
		tb.Fatalf("cannot start embedded NATS server: %v", err)
	}
	tb.Cleanup(srv.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	nc, js, err := bus.Connect(ctx, srv.URL(), "iotwatch-test", nil)
	if err != nil {
		tb.Fatalf("cannot connect to embedded NATS server: %v", err)
	}
	tb.Cleanup(nc.Close)
	cons, kv, err := bus.Ensure(ctx, js, bus.DefaultStreamsConfig())
	if err != nil {
		tb.Fatalf("cannot ensure streams: %v", err)
	}
	return &Env{Server: srv, NC: nc, JS: js, Consumer: cons, KV: kv}
}
