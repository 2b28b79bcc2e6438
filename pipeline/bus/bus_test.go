package bus

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testTimeout bounds every server interaction in a test.
const testTimeout = 20 * time.Second

// startTestServer starts an embedded server that the test shuts down.
func startTestServer(tb testing.TB, o EmbeddedOptions) *Embedded {
	tb.Helper()
	e, err := StartEmbedded(o)
	if err != nil {
		tb.Fatalf("cannot start embedded NATS server: %v", err)
	}
	tb.Cleanup(e.Shutdown)
	return e
}

// connectTest connects to url; the connection is closed when the test ends.
func connectTest(tb testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	nc, js, err := Connect(ctx, url, "iotwatch-test", slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatalf("cannot connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc, js
}

func testContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// lockedWriter serializes writes from the server's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
