package ship

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/formats"
)

// Receiver is the HTTP endpoint of `iotwatch ingest-http`: log pushes such
// as Kong's http-log plugin POST to /logs/<format>/<source>, and each request
// body (one JSON object, a JSON array of them as Kong's batch queue sends, or
// newline-separated records) is published as one message, a batch, to
// iotwatch.logs.<format>.<source>. The answer is 204 only once JetStream has
// acknowledged the message, so a pusher that retries on failure (Kong does)
// loses nothing: 503 when the publish is not acknowledged, 413 for a body
// over MaxBody, 400 for an empty body, 404 for an unknown format. The message
// id is a hash of subject and body: a retry of a push whose answer was lost
// is dropped by the stream's duplicate window.
type Receiver struct {
	JS jetstream.JetStream
	// MaxBody bounds a request body (bytes); keep it under the server's max
	// payload (see MaxBodyFor).
	MaxBody int64
	// PublishTimeout bounds waiting for the ack (default 5s).
	PublishTimeout time.Duration
	Log            *slog.Logger
}

// MaxBodyFor returns the body bound for a server whose max payload is maxPayload.
func MaxBodyFor(maxPayload int64) int64 { return max(1024, maxPayload-4<<10) }

// Handler returns the receiver's routes: POST /logs/{format}/{source}.
func (rc *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /logs/{format}/{source}", rc.push)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	return mux
}

func (rc *Receiver) push(w http.ResponseWriter, r *http.Request) {
	format, source := r.PathValue("format"), r.PathValue("source")
	if !slices.Contains(formats.Names(), format) {
		http.Error(w, fmt.Sprintf("unknown format %q", format), http.StatusNotFound)
		return
	}
	if source == "" || bus.SubjectToken(source) != source {
		http.Error(w, fmt.Sprintf("source %q is not a subject token (no dots, wildcards or spaces)", source), http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, rc.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, fmt.Sprintf("body over %d bytes: send smaller batches", rc.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read the body", http.StatusBadRequest)
		return
	}
	if len(formats.Records(format, nil, body)) == 0 {
		http.Error(w, "empty body", http.StatusBadRequest)
		return
	}
	subject := bus.LogSubject(format, source)
	sum := sha256.Sum256(append([]byte(subject+"\n"), body...))
	timeout := rc.PublishTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	if _, err := rc.JS.Publish(ctx, subject, body, jetstream.WithMsgID("http."+hex.EncodeToString(sum[:16]))); err != nil {
		if rc.Log != nil {
			rc.Log.Warn("cannot publish a log push", "subject", subject, "err", err)
		}
		http.Error(w, "cannot publish: retry", http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
