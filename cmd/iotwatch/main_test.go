package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

func TestHelpExplainsEveryFlag(t *testing.T) {
	for _, c := range commands {
		var out, errOut bytes.Buffer
		if code := mainExit([]string{c.name, "--help"}, &out, &errOut); code != 0 {
			t.Errorf("%s --help exited %d: %s", c.name, code, errOut.String())
		}
		if !strings.Contains(out.String(), "Usage: iotwatch "+c.name) {
			t.Errorf("%s --help lacks a usage line:\n%s", c.name, out.String())
		}
	}
	var out bytes.Buffer
	mainExit([]string{"run", "--help"}, &out, &out)
	for _, flag := range []string{"-nats", "-clickhouse", "-workers", "-alert-threshold", "-block-threshold", "-dry-run", "-allowlist", "-state-idle-ttl", "-logs-retention"} {
		if !strings.Contains(out.String(), flag) {
			t.Errorf("run --help does not mention %s", flag)
		}
	}
}

func TestBadConfigNamesTheFlag(t *testing.T) {
	f := func(flag string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"run"}, args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), flag) {
			t.Errorf("run %v: exit %d, stderr %q; want exit 2 naming %s", args, code, errOut.String(), flag)
		}
	}
	f("--alert-threshold", "--alert-threshold", "1.5")
	f("--block-threshold", "--block-threshold", "0.1")
	f("--block-scope", "--block-scope", "galaxy")
	f("--allowlist", "--allowlist", "10.0.0.0/77")
	f("--detectors", "--detectors", "volume,astrology")
	f("--logs-max-age", "--logs-max-age", "-1s")
	f("--logs-retention", "--logs-retention", "forever")
	f("--flush-rows", "--flush-rows", "0")
	f("--database", "--database", "a;drop")
	f("--geoip", "--geoip", "/nonexistent/geo.mmdb")
	f("--identity", "--identity", "horoscope")
	f("--key-secret-file", "--key-secret-file", "/nonexistent/secret")
	f("--signing-key", "--signing-key", "/nonexistent/key")
	var out, errOut bytes.Buffer
	if code := mainExit([]string{"demo", "--devices", "-3"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--devices") {
		t.Errorf("demo --devices -3: exit %d, stderr %q", code, errOut.String())
	}
	if code := mainExit([]string{"frobnicate"}, &out, &errOut); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
}

// TestEveryConnectionHasAuthFlags checks that every command that connects to
// NATS or ClickHouse takes the authentication flags, and that a secret that
// cannot be resolved fails before connecting, naming the flag.
func TestEveryConnectionHasAuthFlags(t *testing.T) {
	const unset = "env:IOTWATCH_TEST_SURELY_UNSET"
	priv, _, err := schemas.GenerateKey("soc-test")
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "soc.key")
	if err := os.WriteFile(key, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"run", "--nats-password", unset},
		{"ship", "--once", "--nats-token", unset, "/dev/null"},
		{"unblock", "--nats-password", unset, "--scope", "device", "--value", "d", "--reason", "r", "--signing-key", key},
		{"migrate", "--clickhouse-password", unset},
		{"enforce", "http", "--allow-unsigned", "--listen", "127.0.0.1:0", "--nats-token", unset},
		{"enforce", "mosquitto", "--allow-unsigned", "--username", "admin", "--password-file", key, "--nats-token", unset},
	} {
		var out, errOut bytes.Buffer
		code := mainExit(args, &out, &errOut)
		flagName := args[len(args)-2]
		if args[0] == "ship" || args[0] == "unblock" || args[0] == "enforce" {
			flagName = args[slices.Index(args, unset)-1]
		}
		if code == 0 || !strings.Contains(errOut.String(), flagName) {
			t.Errorf("%v: exit %d, stderr %q; want a failure naming %s", args, code, errOut.String(), flagName)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	for in, want := range map[string]string{
		"clickhouse://u:secret@h:9000/db": "clickhouse://u:***@h:9000/db",
		"clickhouse://h:9000/db":          "clickhouse://h:9000/db",
		"clickhouse://u@h:9000/db":        "clickhouse://u@h:9000/db",
	} {
		if got := redactDSN(in); got != want {
			t.Errorf("redactDSN(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInspectFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broker.log")
	if err := os.WriteFile(path, []byte("1767607200: Client x [192.0.2.1:5] disconnected: not authorised.\nbad\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := mainExit([]string{"inspect", "--format", "mosquitto", path}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), `"auth":"failed"`) || !strings.Contains(out.String(), `"dead_letter":{"reason":"bad_timestamp"`) {
		t.Errorf("output:\n%s", out.String())
	}
	if code := mainExit([]string{"inspect", "--format", "mosquitto", "--log-time-zone", "Mars/Olympus", path}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--log-time-zone") {
		t.Errorf("a bad zone: exit %d, %s", code, errOut.String())
	}
}
