package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestEnforceMosquittoStartFails: a wrong password or a broker that is down
// stops 'enforce mosquitto' at start-up with exit 1 and a clear error.
func TestEnforceMosquittoStartFails(t *testing.T) {
	b := mosquittotest.Start(t)
	e := newEnforceEnv(t)
	dir := t.TempDir()
	_, pubFile := writeKeyPair(t, dir, "mosq-test")
	wrong := filepath.Join(dir, "wrong.pw")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := freeAddr(t)
	f := func(name, broker, want string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := mainExit([]string{"enforce", "mosquitto", "--nats", e.url, "--broker", broker, "--username", mosquittotest.AdminUser,
			"--password-file", wrong, "--keys", pubFile, "--log-level", "error"}, &out, &errOut)
		if code != 1 || !strings.Contains(errOut.String(), want) || strings.Contains(out.String(), "iotwatch enforce mosquitto: broker") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 before the start line, naming %q", name, code, out.String(), errOut.String(), want)
		}
	}
	f("wrong password", b.Addr, "connection refused")
	f("broker down", down, down)
}

// TestEnforceMosquittoReconnects: a broker connection cut after start is
// counted, reported by /healthz and /metrics, and re-established.
func TestEnforceMosquittoReconnects(t *testing.T) {
	b := mosquittotest.Start(t)
	e := newEnforceEnv(t)
	dir := t.TempDir()
	_, pubFile := writeKeyPair(t, dir, "mosq-test")
	pw := filepath.Join(dir, "admin.pw")
	if err := os.WriteFile(pw, []byte(mosquittotest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	px := startCutProxy(t, b.Addr)
	metrics := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	stdout := &pipetest.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- enforceCmd(ctx, []string{"mosquitto", "--nats", e.url, "--broker", px.addr, "--username", mosquittotest.AdminUser,
			"--password-file", pw, "--keys", pubFile, "--retry", "100ms", "--metrics-addr", metrics, "--log-level", "error"}, stdout)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("enforce mosquitto: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("enforce mosquitto did not stop")
		}
	}()
	pollUntil(t, "start line", func() bool { return strings.Contains(stdout.String(), "iotwatch enforce mosquitto: broker") })
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + metrics + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	pollUntil(t, "healthz 200", func() bool { code, _ := get("/healthz"); return code == http.StatusOK })
	px.cut()
	pollUntil(t, "the disconnect counted", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, schemas.MetricMosquittoDisconnects+" 1")
	})
	pollUntil(t, "the connection back", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, schemas.MetricMosquittoConnected+" 1") && px.accepted() >= 2
	})
}

// freeAddr returns a loopback address nobody listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// cutProxy forwards TCP connections to a target; cut closes the open ones.
type cutProxy struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
	n     int
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String()}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.n++
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
