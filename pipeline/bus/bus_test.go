package bus

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testTimeout bounds every server interaction in a test: a generous bound on a
// hang, never a speed check (20 s ran out for TestRawConsumeRate's 20,000
// messages under the race detector on two cores at load 20).
const testTimeout = 2 * time.Minute

// startTestServer starts an embedded server that the test shuts down.
func startTestServer(tb testing.TB, o natsserver.Options) *natsserver.Server {
	tb.Helper()
	e, err := natsserver.Start(o)
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

// serverJS starts an embedded server without the iotwatch streams and
// returns a test context and a JetStream context on it.
func serverJS(tb testing.TB) (context.Context, jetstream.JetStream) {
	tb.Helper()
	_, js := connectTest(tb, startTestServer(tb, natsserver.Options{}).URL())
	return testContext(tb), js
}

// logBuffer is a strings.Builder safe for concurrent Write and String (the
// server and nats.go log from their own goroutines).
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
