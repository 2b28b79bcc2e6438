package main

import (
	"context"
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
}

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
	o.conn.registerNATS(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch unblock --signing-key FILE --scope SCOPE --value V --reason TEXT [flags]

Lifts an active block (or throttle) before its TTL ends: publishes a signed
unblock decision on %[1]s.unblock (the decision history) and writes it over the
block in KV bucket %[2]s. Enforcement points verify its signature, stop
enforcing the block, and acknowledge on %[3]s.

The unblock names the block it lifts (its id is the block's id followed by %[4]q).
When the bucket no longer holds a block for the scope and value, the unblock
still lifts any older one that enforcement points hold. A later block for the
same scope and value is not affected.

Example:
  iotwatch unblock --nats nats://nats.internal:4222 --signing-key /etc/iotwatch/soc.key \
      --scope device --value acme/lock-17 --reason "firmware update, ticket SOC-1234"

Flags:
`, schemas.SubjectDecisionsPrefix, schemas.KVActiveBlocks, schemas.SubjectDecisionsApplied, schemas.UnblockIDSuffix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", fs.Args())}
	}
	log, err := newLogger(os.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	keyID, priv, err := schemas.LoadPrivateKey(o.signingKey)
	if err != nil {
		return usageError{fmt.Errorf("cannot use --signing-key: %w", err)}
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
	res, err := unblock.Lift(ctx, js, kv, unblock.Request{
		Scope: o.scope, Value: o.value, Reason: o.reason, Issuer: o.issuer,
		KeyID: keyID, Key: priv, Now: time.Now(),
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

// check validates the flags; errors name the flag.
func (o *unblockOptions) check() error {
	switch {
	case o.signingKey == "":
		return usageError{errors.New("cannot unblock: --signing-key is required")}
	case o.scope == "":
		return usageError{errors.New("cannot unblock: --scope is required (" + strings.Join(schemas.Scopes(), ", ") + ")")}
	case o.value == "":
		return usageError{errors.New("cannot unblock: --value is required")}
	case strings.TrimSpace(o.reason) == "":
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
