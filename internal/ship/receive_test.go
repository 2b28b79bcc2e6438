package ship

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/natsserver/natstest"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestReceiver posts Kong http-log batches to the receiver in front of the
// real embedded NATS: 204 only once the message is in the stream, the same
// push twice is stored once, and a push NATS cannot take is answered 503 so
// that Kong retries.
func TestReceiver(t *testing.T) {
	env := natstest.Start(t, natsserver.Options{})
	rc := &Receiver{JS: env.JS, MaxBody: 4096, PublishTimeout: 2 * time.Second}
	srv := httptest.NewServer(rc.Handler())
	defer srv.Close()
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	batch := `[{"request":{"method":"GET","uri":"/v1/x"},"client_ip":"192.0.2.1","response":{"status":200},"started_at":1767607200000},` +
		`{"request":{"method":"GET","uri":"/v1/y"},"client_ip":"192.0.2.2","response":{"status":200},"started_at":1767607201000}]`
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/logs/kong/kong-1", batch, 204},
		{"/logs/kong/kong-1", batch, 204}, // Kong's retry after a lost answer
		{"/logs/kong/kong-1", `{"request":{"method":"GET","uri":"/v1/z"},"client_ip":"192.0.2.3","response":{"status":200},"started_at":1767607202000}`, 204},
		{"/logs/apache/web-1", batch, 404},
		{"/logs/kong/a.b", batch, 400},
		{"/logs/kong/kong-1", "  \n", 400},
		{"/logs/kong/kong-1", "[" + strings.Repeat(`{"a":1},`, 1000) + "{}]", 413},
	} {
		if got := post(c.path, c.body); got != c.want {
			t.Errorf("POST %s (%d bytes): %d, want %d", c.path, len(c.body), got, c.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := env.JS.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("%d messages in the stream, want 2 (the retried batch stored once)", info.State.Msgs)
	}
	m, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "iotwatch.logs.kong.kong-1" || string(m.Data) != batch {
		t.Errorf("message 1: %s %q", m.Subject, m.Data)
	}

	env.Server.Shutdown() // NATS is gone: the push must not be acknowledged
	if got := post("/logs/kong/kong-1", `{"request":{"uri":"/"},"client_ip":"192.0.2.9","started_at":1767607203000}`); got != http.StatusServiceUnavailable {
		t.Errorf("NATS down: %d, want 503", got)
	}
}
