package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// writeKeyPair writes a signing key pair named keyID under dir and returns
// the private and public key files.
func writeKeyPair(t *testing.T, dir, keyID string) (privFile, pubFile string) {
	t.Helper()
	priv, pub, err := schemas.GenerateKey(keyID)
	if err != nil {
		t.Fatal(err)
	}
	privFile, pubFile = filepath.Join(dir, keyID+".key"), filepath.Join(dir, keyID+".pub")
	if err := os.WriteFile(privFile, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return privFile, pubFile
}

// TestUnblockCommand: a block signed by the pipeline's key is enforced by the
// real enforcement client; `iotwatch unblock`, signing with the SOC's key,
// lifts it, the client acknowledges the unblock, and the decision history
// keeps both decisions.
func TestUnblockCommand(t *testing.T) {
	e := newEnforceEnv(t)
	dir := t.TempDir()
	pipelineKey, pipelinePub := writeKeyPair(t, dir, "pipeline-1")
	socKey, socPub := writeKeyPair(t, dir, "soc-1")
	keys, err := schemas.LoadPublicKeys(pipelinePub, socPub)
	if err != nil {
		t.Fatal(err)
	}
	pkID, pk, err := schemas.LoadPrivateKey(pipelineKey)
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, pkID, pk, "d-lock", schemas.ActionBlock, schemas.ScopeDevice, "acme/lock-17")
	e.publish(t, pkID, pk, "d-other", schemas.ActionBlock, schemas.ScopeDevice, "acme/lock-18")

	c, err := enforce.New(enforce.Options{EnforcerID: "edge-1", Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, e.js) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	<-c.Synced()
	if c.Check(enforce.Request{Device: "acme/lock-17"}).Allowed() {
		t.Fatal("block not enforced before the unblock")
	}

	var out bytes.Buffer
	err = unblockCmd(e.ctx, []string{"--nats", e.url, "--signing-key", socKey, "--scope", "device",
		"--value", "acme/lock-17", "--reason", "firmware update SOC-1234", "--issuer", "alice"}, &out)
	if err != nil {
		t.Fatalf("unblock: %v", err)
	}
	if !strings.Contains(out.String(), `"d-lock"`) || !strings.Contains(out.String(), schemas.UnblockID("d-lock")) {
		t.Errorf("unblock output %q; want the lifted and the unblock ids", out.String())
	}
	pollUntil(t, "the block lifted", func() bool { return c.Check(enforce.Request{Device: "acme/lock-17"}).Allowed() })
	if c.Check(enforce.Request{Device: "acme/lock-18"}).Allowed() {
		t.Error("unblocking one device lifted another")
	}
	pollUntil(t, "the receipts published", func() bool { return c.Stats().ReceiptsSent == 3 })

	// The decision stream: both blocks, the signed unblock, and the receipts.
	s, err := e.js.Stream(e.ctx, schemas.StreamDecisions)
	if err != nil {
		t.Fatal(err)
	}
	var unblock *schemas.Decision
	var receipt *schemas.ApplyReceipt
	for seq := uint64(1); ; seq++ {
		m, err := s.GetMsg(e.ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch m.Subject {
		case schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock:
			unblock = new(schemas.Decision)
			if err := json.Unmarshal(m.Data, unblock); err != nil {
				t.Fatal(err)
			}
		case schemas.SubjectDecisionsApplied:
			var r schemas.ApplyReceipt
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			if r.Action == schemas.ActionUnblock {
				receipt = &r
			}
		}
	}
	if unblock == nil {
		t.Fatal("no unblock in the decision stream")
	}
	if err := schemas.VerifyDecision(unblock, keys); err != nil || schemas.SignatureKeyID(unblock) != "soc-1" {
		t.Errorf("unblock in the stream: %v, key %q; want signed by soc-1", err, schemas.SignatureKeyID(unblock))
	}
	if unblock.ID != schemas.UnblockID("d-lock") || unblock.Issuer != "alice" || !strings.Contains(unblock.Reason, "firmware update SOC-1234") {
		t.Errorf("unblock %+v; want id %q, issuer alice and the reason", unblock, schemas.UnblockID("d-lock"))
	}
	if receipt == nil || receipt.DecisionID != "d-lock" || receipt.EnforcerID != "edge-1" || receipt.KeyID != "soc-1" {
		t.Errorf("unblock receipt %+v; want d-lock by edge-1 authorised by soc-1", receipt)
	}

	// Again: nothing left to lift, an error that says what the bucket holds
	// and what is blocked for the scope; with --if-blocked, a success.
	out.Reset()
	again := []string{"--nats", e.url, "--signing-key", socKey, "--scope", "device", "--value", "acme/lock-17", "--reason", "again"}
	if err := unblockCmd(e.ctx, again, &out); err == nil || !strings.Contains(err.Error(), "not blocked") ||
		!strings.Contains(err.Error(), schemas.UnblockID("d-lock")) || !strings.Contains(err.Error(), `1 active for scope device: "acme/lock-18"`) {
		t.Errorf("second unblock: %v; want an error naming the unblock held and the active block of the scope", err)
	}
	out.Reset()
	if err := unblockCmd(e.ctx, append(again, "--if-blocked"), &out); err != nil || !strings.Contains(out.String(), "nothing published") {
		t.Errorf("second unblock --if-blocked: %v, output %q; want success and nothing published", err, out.String())
	}
	// A value never blocked: an error; --force publishes the unblock anyway.
	never := []string{"--nats", e.url, "--signing-key", socKey, "--scope", "ip", "--value", "192.0.2.1", "--reason", "r"}
	if err := unblockCmd(e.ctx, never, &out); err == nil || !strings.Contains(err.Error(), "nothing is blocked for scope ip") {
		t.Errorf("unblock of a value never blocked: %v; want an error saying nothing is blocked for the scope", err)
	}
	out.Reset()
	if err := unblockCmd(e.ctx, append(never, "--force"), &out); err != nil || !strings.Contains(out.String(), "published unblock") {
		t.Errorf("unblock --force of a value never blocked: %v, output %q; want the unblock published", err, out.String())
	}
}

// TestUnblockKeyValue: --key-value hashes an API key as the pipeline does,
// and --dry-run shows the hash and the block it names without publishing;
// 'iotwatch keyhash' prints the same hash.
func TestUnblockKeyValue(t *testing.T) {
	e := newEnforceEnv(t)
	dir := t.TempDir()
	pipelineKey, _ := writeKeyPair(t, dir, "pipeline-1")
	pkID, pk, err := schemas.LoadPrivateKey(pipelineKey)
	if err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "key.secret")
	if err := os.WriteFile(secretFile, []byte("0123456789abcdef-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash := formats.KeyHasher([]byte("0123456789abcdef-secret"))("sk-live-42")
	e.publish(t, pkID, pk, "d-key", schemas.ActionBlock, schemas.ScopeAPIKey, hash)

	var out bytes.Buffer
	if err := keyhashCmd(e.ctx, []string{"--key-secret-file", secretFile, "sk-live-42"}, &out); err != nil || out.String() != hash+"\n" {
		t.Errorf("keyhash: %v, output %q; want %q", err, out.String(), hash)
	}
	out.Reset()
	err = unblockCmd(e.ctx, []string{"--nats", e.url, "--dry-run", "--scope", "api_key",
		"--key-value", "sk-live-42", "--key-secret-file", secretFile}, &out)
	if err != nil || !strings.Contains(out.String(), hash) || !strings.Contains(out.String(), `block "d-key"`) {
		t.Errorf("unblock --dry-run --key-value: %v, output %q; want the hash and the block it names", err, out.String())
	}
	f := func(want string, args ...string) {
		t.Helper()
		err := unblockCmd(e.ctx, append([]string{"--nats", e.url, "--dry-run", "--scope", "api_key"}, args...), &out)
		if !isUsageError(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("unblock %q: %v; want a usage error naming %s", args, err, want)
		}
	}
	f("--key-secret-file", "--key-value", "sk-live-42")
	f("--key-value", "--key-value", "sk-live-42", "--value", hash, "--key-secret-file", secretFile)
	f("--key-value", "--key-secret-file", secretFile)
	if err := keyhashCmd(e.ctx, []string{"sk-live-42"}, &out); !isUsageError(err) {
		t.Errorf("keyhash without --key-secret-file: %v; want a usage error", err)
	}
}

func TestUnblockUsage(t *testing.T) {
	dir := t.TempDir()
	key, _ := writeKeyPair(t, dir, "soc-1")
	base := []string{"--signing-key", key, "--scope", "device", "--value", "d-1", "--reason", "r"}
	f := func(flagName string, args ...string) {
		t.Helper()
		var out bytes.Buffer
		err := unblockCmd(context.Background(), args, &out)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), flagName) {
			t.Errorf("unblock %q: error %v; want a usage error naming %s", args, err, flagName)
		}
	}
	without := func(name string) []string {
		var out []string
		for i := 0; i < len(base); i += 2 {
			if base[i] != name {
				out = append(out, base[i], base[i+1])
			}
		}
		return out
	}
	for _, name := range []string{"--signing-key", "--scope", "--value", "--reason"} {
		f(name, without(name)...)
	}
	f("--scope", append(without("--scope"), "--scope", "planet")...)
	f("--value", "--signing-key", key, "--scope", "ip", "--value", "10.0.0.300", "--reason", "r")
	f("--signing-key", "--signing-key", filepath.Join(dir, "missing.key"), "--scope", "device", "--value", "d-1", "--reason", "r")
	f("--timeout", append(base, "--timeout", "0s")...)

	var out bytes.Buffer
	if err := unblockCmd(context.Background(), []string{"--help"}, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{"Usage: iotwatch unblock", "-signing-key", "-scope", "-value", "-reason", "-issuer", "-nats-creds", schemas.KVActiveBlocks} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
	if strings.Contains(out.String(), "-clickhouse") {
		t.Error("--help lists ClickHouse flags")
	}
}
