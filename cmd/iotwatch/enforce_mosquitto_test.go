package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/enforce/mosquitto"
	"github.com/iotwatch/iotwatch/internal/mosquittotest"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestEnforceMosquitto runs `enforce mosquitto` against a real Mosquitto with
// dynamic security: a signed block of device "dev" makes a real mosquitto_pub
// with dev's credentials fail while another device keeps publishing, and the
// unblock lets dev in again. It repeats block → refused → unblock 20 times and
// logs the time from publishing the decision to the first refused
// mosquitto_pub (p50, p99).
func TestEnforceMosquitto(t *testing.T) {
	var brokerDir string
	t.Cleanup(func() { // registered first, so it runs after the broker is killed
		if brokerDir == "" {
			return
		}
		if pids := mosquittotest.ProcessesMentioning(brokerDir); len(pids) > 0 {
			t.Errorf("mosquitto processes left after the test: %v", pids)
		}
	})
	b := mosquittotest.Start(t)
	brokerDir = b.Dir
	b.AddClient(t, "dev", "dev-pw")
	b.AddClient(t, "other", "other-pw")
	e := newEnforceEnv(t)

	dir := t.TempDir()
	privFile, pubFile := writeKeyPair(t, dir, "mosq-test")
	if err := os.WriteFile(filepath.Join(dir, "admin.pw"), []byte(mosquittotest.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyID, priv, err := schemas.LoadPrivateKey(privFile)
	if err != nil {
		t.Fatal(err)
	}

	pub := func(user, pw string) (string, error) {
		return b.Pub(t, user, pw, "devices/"+user+"/cmd/unlock", "1")
	}
	if out, err := pub("dev", "dev-pw"); err != nil {
		t.Fatalf("dev cannot publish before any decision: %v: %s", err, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	stdout := &pipetest.LockedBuffer{}
	done := make(chan error, 1)
	state := filepath.Join(dir, "state")
	go func() {
		done <- enforceCmd(ctx, []string{"mosquitto", "--nats", e.url, "--broker", b.Addr,
			"--username", mosquittotest.AdminUser, "--password-file", filepath.Join(dir, "admin.pw"),
			"--keys", pubFile, "--enforcer-id", "mosq-1", "--state", state, "--log-level", "error"}, stdout)
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

	// A throttle cannot be applied by dynamic security: "other" stays enabled.
	e.publish(t, keyID, priv, "dec-thr", schemas.ActionThrottle, schemas.ScopeMQTTUsername, "other")

	// The broker's dynamic-security responses, timestamped: they time the
	// enforcer alone, without the mosquitto_pub probe's own run time.
	disabledAt := make(chan time.Time, 100)
	watch, err := mqtt.Dial(e.ctx, mqtt.Options{Addr: b.Addr, ClientID: "test-watch", Username: mosquittotest.AdminUser, Password: mosquittotest.AdminPassword,
		OnMessage: func(_ string, payload []byte) {
			if strings.Contains(string(payload), `"disableClient"`) && !strings.Contains(string(payload), `"error"`) {
				disabledAt <- time.Now()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close()
	if err := watch.Subscribe(e.ctx, mosquitto.DynSecResponseTopic, 0); err != nil {
		t.Fatal(err)
	}

	const reps = 20
	var lat, applied []time.Duration
	for i := range reps {
		t0 := time.Now()
		e.publish(t, keyID, priv, fmt.Sprintf("dec-block-%d", i), schemas.ActionBlock, schemas.ScopeMQTTUsername, "dev")
		pollUntil(t, "dev refused", func() bool {
			_, err := pub("dev", "dev-pw")
			return err != nil
		})
		lat = append(lat, time.Since(t0))
		select {
		case at := <-disabledAt:
			applied = append(applied, at.Sub(t0))
		case <-time.After(10 * time.Second):
			t.Fatal("no disableClient response seen")
		}
		if i == 0 {
			// Once the broker has applied the block, a new connection is
			// refused (a client caught while it was being applied is cut
			// off instead: "the connection was lost").
			refusal, err := pub("dev", "dev-pw")
			if err == nil || !regexp.MustCompile(`(?i)not authori[sz]ed|refused`).MatchString(refusal) {
				t.Errorf("mosquitto_pub of the blocked device said %q; want a refusal", refusal)
			}
			if out, err := pub("other", "other-pw"); err != nil {
				t.Errorf("another device cannot publish while dev is blocked: %v: %s", err, out)
			}
		}
		e.publish(t, keyID, priv, fmt.Sprintf("dec-unblock-%d", i), schemas.ActionUnblock, schemas.ScopeMQTTUsername, "dev")
		pollUntil(t, "dev enabled again", func() bool {
			_, err := pub("dev", "dev-pw")
			return err == nil
		})
	}
	if out, err := pub("other", "other-pw"); err != nil {
		t.Errorf("throttled device cannot publish: %v: %s", err, out)
	}

	// A block that expires is lifted without an unblock.
	now := time.Now()
	d := schemas.Decision{ID: "dec-short", Action: schemas.ActionBlock, Scope: schemas.ScopeMQTTUsername, Value: "dev",
		CreatedAt: now, ExpiresAt: now.Add(time.Second), SchemaV: schemas.SchemaVersion}
	if err := schemas.SignDecision(&d, keyID, priv); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.PublishDecisions(e.ctx, []schemas.Decision{d}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "dev refused by a short block", func() bool {
		_, err := pub("dev", "dev-pw")
		return err != nil
	})
	pollUntil(t, "dev enabled after expiry", func() bool {
		_, err := pub("dev", "dev-pw")
		return err == nil
	})
	if time.Now().Before(d.ExpiresAt) {
		t.Errorf("dev enabled before its block expired")
	}
	// The enforcer saves its state after the broker confirms the enable: it
	// may land just after mosquitto_pub succeeds.
	pollUntil(t, "state file without a disabled username", func() bool {
		data, err := os.ReadFile(state + ".dynsec")
		return err == nil && strings.Contains(string(data), `"disabled":[]`)
	})
	t.Logf("decision published → broker confirmed disableClient, %d runs: %s", len(applied), percentiles(applied))
	t.Logf("decision published → first refused mosquitto_pub (polled back to back), %d runs: %s", len(lat), percentiles(lat))
}

func TestEnforceMosquittoUsage(t *testing.T) {
	f := func(want string, args ...string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"enforce", "mosquitto"}, args...), &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), want) {
			t.Errorf("enforce mosquitto %v: exit %d, stderr %q; want exit 2 naming %q", args, code, errOut.String(), want)
		}
	}
	f("--username")
	f("--password-file", "--username", "admin", "--password-file", "/nonexistent")
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("x"), 0o600)
	f("--keys", "--username", "admin", "--password-file", pw)
	f(`scope "ip"`, "--username", "admin", "--password-file", pw, "--allow-unsigned", "--scopes", "device,ip")
	var out bytes.Buffer
	if err := enforceCmd(context.Background(), []string{"mosquitto", "--help"}, &out); err == nil || !strings.Contains(out.String(), "disableClient") {
		t.Errorf("--help: %v, %q", err, out.String())
	}
}

// percentiles formats p50, p99 and max of ds (sorted in place).
func percentiles(ds []time.Duration) string {
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("p50 %v, p99 %v, max %v", r(ds[len(ds)/2]), r(ds[(len(ds)*99+99)/100-1]), r(ds[len(ds)-1]))
}
