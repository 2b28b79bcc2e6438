package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/iotwatch/iotwatch/enforce/unblock"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/schemas"
)

// unblockOptions are the flags of `iotwatch unblock`.
type unblockOptions struct {
	conn       connFlags // only its NATS flags are registered
	natsURL    string
	signingKey string
	scope      string
	value      string
	reason     string
	issuer     string
	timeout    time.Duration
	logLevel   string
	// keyValue is an API key in clear, hashed with keySecret into the value.
	keyValue  string
	keySecret string
	ifBlocked bool // exit 0 when nothing is blocked
	force     bool // publish an unblock even when the bucket holds no active block
	dryRun    bool // say what would be lifted, publish nothing
}

// maxActiveListed bounds the active blocks of a scope the command lists when
// the value asked for is not blocked.
const maxActiveListed = 10

// unblockCmd publishes a signed unblock for one scope and value: the SOC
// analyst's way to lift a block before its TTL ends.
func unblockCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("unblock", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o unblockOptions
	fs.StringVar(&o.natsURL, "nats", defaultNATS, "NATS server URL(s) holding the decisions, comma-separated")
	fs.StringVar(&o.signingKey, "signing-key", "", "ed25519 private key file to sign the unblock with ('iotwatch enforce keygen'); enforcement points must trust its public key (required)")
	fs.StringVar(&o.scope, "scope", "", "scope of the block to lift, as the decision names it: device, api_key, mqtt_username, mqtt_client_id, ip, cidr or tenant (required)")
	fs.StringVar(&o.value, "value", "", "value of the block to lift, exactly as in the block decision: a device id, an API key id (as hashed by the pipeline), an address or CIDR, or a tenant (required)")
	fs.StringVar(&o.reason, "reason", "", "why the block is lifted, stored with the unblock for the audit trail (required)")
	fs.StringVar(&o.issuer, "issuer", defaultIssuer(), "who lifts the block, stored with the unblock")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up if NATS does not answer within this time")
	fs.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn or error")
	fs.StringVar(&o.keyValue, "key-value", "", "an API key in clear, instead of --value: hashed with --key-secret-file as the pipeline hashes keys (for --scope api_key, or device when devices are identified by their key)")
	fs.StringVar(&o.keySecret, "key-secret-file", "", "the pipeline's --key-secret-file, for --key-value")
	fs.BoolVar(&o.ifBlocked, "if-blocked", false, "succeed without publishing anything when the value is not blocked (for scripts; by default that is an error)")
	fs.BoolVar(&o.force, "force", false, "publish the unblock even when the bucket holds no active block for the value (it still lifts an older block that enforcement points hold)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the value (the key's hash with --key-value) and what the bucket holds for it; publish nothing")
	o.conn.registerNATS(fs, schemas.InboxSOC)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch unblock --signing-key FILE --scope SCOPE --value V --reason TEXT [flags]

Lifts an active block (or throttle) before its TTL ends: publishes a signed
unblock decision on %[1]s.unblock (the decision history) and writes it over the
block in KV bucket %[2]s. Enforcement points verify its signature, stop
enforcing the block, and acknowledge on %[3]s.

The unblock names the block it lifts (its id is the block's id followed by %[4]q).
When the bucket holds no active block for the scope and value, the command
lists what is blocked for the scope and exits 1 without publishing anything;
--if-blocked makes that a success (idempotent scripts), and --force publishes
the unblock anyway (it lifts any older block that enforcement points still
hold, e.g. after a bare KV delete). A later block for the same scope and value
is not affected. The pipeline stores the unblock, with its issuer and reason,
in the ClickHouse table decisions.

An API-key device is known by its key's hash: --key-value KEY with the
pipeline's --key-secret-file computes it ('iotwatch keyhash' prints it).

Example:
  iotwatch unblock --nats nats://nats.internal:4222 --signing-key /etc/iotwatch/soc.key \
      --scope device --value acme/lock-17 --reason "firmware update, ticket SOC-1234"

Flags:
`, schemas.SubjectDecisionsPrefix, schemas.KVActiveBlocks, schemas.SubjectDecisionsApplied, schemas.UnblockIDSuffix)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	log, err := newLogger(os.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	if err := o.hashKeyValue(); err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	var keyID string
	var priv ed25519.PrivateKey
	if !o.dryRun {
		if keyID, priv, err = schemas.LoadPrivateKey(o.signingKey); err != nil {
			return usageError{fmt.Errorf("cannot use --signing-key: %w", err)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	nc, js, err := o.conn.connectNATS(ctx, o.natsURL, "iotwatch-unblock", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		return fmt.Errorf("cannot open KV bucket %q at --nats %q: %w", schemas.KVActiveBlocks, bus.RedactURL(o.natsURL), err)
	}
	now := time.Now()
	held, blocked, err := unblock.Held(ctx, kv, o.scope, o.value, now)
	if err != nil {
		return err
	}
	if o.dryRun {
		fmt.Fprintf(stdout, "%s=%q: %s\n", o.scope, o.value, describeHeld(held, blocked))
		return nil
	}
	if !blocked && !o.force {
		msg := fmt.Sprintf("%s=%q is not blocked (%s)", o.scope, o.value, describeHeld(held, blocked))
		if o.ifBlocked {
			fmt.Fprintf(stdout, "%s; nothing published (--if-blocked)\n", msg)
			return nil
		}
		active, n, err := unblock.Active(ctx, kv, o.scope, now, maxActiveListed)
		if err != nil {
			return fmt.Errorf("cannot unblock: %s, and %w", msg, err)
		}
		return fmt.Errorf("cannot unblock: %s; %s; nothing published (--if-blocked makes this a success, --force publishes anyway)",
			msg, describeActive(o.scope, active, n))
	}
	res, err := unblock.Lift(ctx, js, kv, unblock.Request{
		Scope: o.scope, Value: o.value, Reason: o.reason, Issuer: o.issuer,
		KeyID: keyID, Key: priv, Now: now,
	}, log)
	if err != nil {
		return err
	}
	held, u := res.Held, res.Unblock
	if !res.Published {
		fmt.Fprintf(stdout, "%s %s=%q is already lifted by unblock %q (%s)\n", schemas.KVActiveBlocks, o.scope, o.value, held.ID, held.Issuer)
		return nil
	}
	if held == nil {
		fmt.Fprintf(stdout, "no active decision for %s=%q in %s; published unblock %q (key %q): it lifts any older one enforcement points still hold\n",
			o.scope, o.value, schemas.KVActiveBlocks, u.ID, keyID)
		return nil
	}
	fmt.Fprintf(stdout, "lifted %s %q on %s=%q with unblock %q (key %q); enforcement points acknowledge on %s\n",
		held.Action, held.ID, o.scope, o.value, u.ID, keyID, schemas.SubjectDecisionsApplied)
	return nil
}

// describeHeld says what the bucket holds for a value.
func describeHeld(held *schemas.Decision, active bool) string {
	switch {
	case held == nil:
		return "no decision in " + schemas.KVActiveBlocks
	case held.Action == schemas.ActionUnblock:
		return fmt.Sprintf("lifted by unblock %q of %s at %s: %s", held.ID, held.Issuer, held.CreatedAt.Format(time.RFC3339), held.Reason)
	case !active:
		return fmt.Sprintf("%s %q expired at %s", held.Action, held.ID, held.ExpiresAt.Format(time.RFC3339))
	}
	return fmt.Sprintf("%s %q until %s, reason %s, issuer %s", held.Action, held.ID, held.ExpiresAt.Format(time.RFC3339), held.Reason, held.Issuer)
}

// describeActive lists the active blocks of a scope (n in all).
func describeActive(scope string, active []schemas.Decision, n int) string {
	if n == 0 {
		return "nothing is blocked for scope " + scope
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d active for scope %s:", n, scope)
	for i, d := range active {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, " %q (%s until %s)", d.Value, d.Action, d.ExpiresAt.Format(time.RFC3339))
	}
	if n > len(active) {
		fmt.Fprintf(&sb, ", and %d more", n-len(active))
	}
	return sb.String()
}

// hashKeyValue turns --key-value into --value with --key-secret-file.
func (o *unblockOptions) hashKeyValue() error {
	switch {
	case o.keyValue == "" && o.keySecret == "":
		return nil
	case o.keyValue == "":
		return usageError{errors.New("cannot use --key-secret-file without --key-value")}
	case o.value != "":
		return usageError{errors.New("cannot use --key-value with --value: give one")}
	case o.keySecret == "":
		return usageError{errors.New("cannot use --key-value: --key-secret-file is required (the pipeline's)")}
	}
	h, err := keyHash(o.keySecret, o.keyValue)
	if err != nil {
		return usageError{fmt.Errorf("cannot use --key-secret-file: %w", err)}
	}
	o.value = h
	return nil
}

// check validates the flags; errors name the flag.
func (o *unblockOptions) check() error {
	switch {
	case o.ifBlocked && o.force:
		return usageError{errors.New("cannot use --if-blocked with --force")}
	case o.signingKey == "" && !o.dryRun:
		return usageError{errors.New("cannot unblock: --signing-key is required")}
	case o.scope == "":
		return usageError{errors.New("cannot unblock: --scope is required (" + strings.Join(schemas.Scopes(), ", ") + ")")}
	case o.value == "":
		return usageError{errors.New("cannot unblock: --value is required")}
	case strings.TrimSpace(o.reason) == "" && !o.dryRun:
		return usageError{errors.New("cannot unblock: --reason is required")}
	case strings.TrimSpace(o.issuer) == "":
		return usageError{errors.New("cannot unblock: --issuer must not be empty")}
	case o.timeout <= 0:
		return usageError{fmt.Errorf("cannot use --timeout %s: want > 0", o.timeout)}
	}
	switch o.scope {
	case schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeTenant, schemas.ScopeMQTTUsername, schemas.ScopeMQTTClientID:
	case schemas.ScopeIP, schemas.ScopeCIDR:
		if _, err := netip.ParseAddr(o.value); err != nil || o.scope == schemas.ScopeCIDR {
			if _, err := netip.ParsePrefix(o.value); err != nil {
				return usageError{fmt.Errorf("cannot use --value %q with --scope %s: want an address or a CIDR", o.value, o.scope)}
			}
		}
	default:
		return usageError{fmt.Errorf("cannot use --scope %q: want one of %s", o.scope, strings.Join(schemas.Scopes(), ", "))}
	}
	return nil
}

// defaultIssuer names the analyst running the command: "analyst/$USER".
func defaultIssuer() string {
	if u := os.Getenv("USER"); u != "" {
		return "analyst/" + u
	}
	return "analyst"
}
