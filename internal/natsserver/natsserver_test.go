package natsserver

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

func TestRemovesTempStore(t *testing.T) {
	e, err := Start(Options{})
	if err != nil {
		t.Fatalf("cannot start: %v", err)
	}
	dir := e.tempDir
	if dir == "" {
		t.Fatal("no temporary store directory was created")
	}
	if !strings.HasPrefix(e.URL(), "nats://127.0.0.1:") || e.Port() <= 0 {
		t.Fatalf("URL %q, port %d; want nats://127.0.0.1:<port>", e.URL(), e.Port())
	}
	e.Shutdown()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary store %q still exists after Shutdown (stat error %v)", dir, err)
	}
	e.Shutdown() // safe twice
}

func TestLogsThroughSlog(t *testing.T) {
	var buf logBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	e, err := Start(Options{Log: log})
	if err != nil {
		t.Fatalf("cannot start embedded NATS server: %v", err)
	}
	e.Shutdown()
	if !strings.Contains(buf.String(), `msg="nats server notice"`) {
		t.Fatalf("no server notice was logged through slog; got %q", buf.String())
	}
}

// logBuffer is a strings.Builder safe for concurrent Write and String (the
// server logs from its own goroutines).
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
