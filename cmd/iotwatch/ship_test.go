package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

func TestShipBadFlagsNameTheFlag(t *testing.T) {
	f := func(flag string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"ship"}, args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), flag) {
			t.Errorf("ship %v: exit %d, stderr %q; want exit 2 naming %s", args, code, errOut.String(), flag)
		}
	}
	f("--lines", "--lines", "0", "a.log")
	f("--max-bytes", "--max-bytes", "-5", "a.log")
	f("--max-pending", "--max-pending", "0", "a.log")
	f("--poll", "--poll", "0s", "a.log")
	f("--progress", "--progress", "-1s", "a.log")
	f("--give-up", "--give-up", "-1s", "a.log")
	f("--log-level", "--log-level", "loud", "--state", "none", "--nats", "nats://127.0.0.1:1", "a.log")
	f("no input")
	var out, errOut bytes.Buffer
	mainExit([]string{"ship", "--help"}, &out, &errOut)
	for _, flag := range []string{"-nats", "-format", "-source", "-follow", "-once", "-lines", "-max-bytes", "-state", "-max-pending", "-poll", "-rotate-wait", "-progress"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("ship --help does not mention %s", flag)
		}
	}
}

func TestShipOnceEndToEnd(t *testing.T) {
	e, err := natsserver.Start(natsserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	var content strings.Builder
	for i := range 250 {
		fmt.Fprintf(&content, `{"i":%d}`+"\n", i)
	}
	if err := os.WriteFile(path, []byte(content.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "ship.state")
	args := []string{"--nats", e.URL(), "--once", "--format", "nginx-json", "--source", "edge-1", "--lines", "100", "--state", state, path}

	// Without the stream, ship refuses and says how to create it.
	var out, errOut bytes.Buffer
	err = shipMain(ctx, args, &out, &errOut, nil)
	if err == nil || !strings.Contains(err.Error(), schemas.StreamLogs) || !strings.Contains(err.Error(), "iotwatch run") {
		t.Fatalf("ship without stream: %v; want an error naming %s and 'iotwatch run'", err, schemas.StreamLogs)
	}

	nc, js, err := bus.Connect(ctx, e.URL(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, _, err := bus.Ensure(ctx, js, bus.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	errOut.Reset()
	if err := shipMain(ctx, args, &out, &errOut, nil); err != nil {
		t.Fatalf("ship: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(errOut.String(), "ship: done lines=250 messages=3") {
		t.Errorf("no summary line in stderr:\n%s", errOut.String())
	}
	s, err := js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "iotwatch.logs.nginx-json.edge-1" {
			t.Errorf("subject %q", m.Subject)
		}
		if m.Header.Get("Nats-Msg-Id") == "" {
			t.Errorf("message %d has no Nats-Msg-Id", seq)
		}
		got.Write(m.Data)
	}
	if got.String() != content.String() {
		t.Errorf("stream content differs from the file")
	}
	// A second run resumes at the end: nothing new is stored.
	errOut.Reset()
	if err := shipMain(ctx, args, &out, &errOut, nil); err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 3 {
		t.Errorf("after a second run the stream holds %v messages (%v), want 3", info.State.Msgs, err)
	}
}

// TestShipOnceGivesUp: 'ship --once' against a NATS that is not there fails
// after --give-up with an error that says so, instead of retrying forever.
func TestShipOnceGivesUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	if err := os.WriteFile(path, []byte(`{"i":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := mainExit([]string{"ship", "--once", "--give-up", "300ms", "--state", "none", "--log-level", "error",
		"--nats", "nats://127.0.0.1:1", path}, &out, &errOut)
	if code != 1 || !strings.Contains(errOut.String(), "--give-up") || !strings.Contains(errOut.String(), "127.0.0.1:1") {
		t.Errorf("ship --once with NATS down: exit %d, stderr %q; want 1 naming --give-up and the URL", code, errOut.String())
	}
}
