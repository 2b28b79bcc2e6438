package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/forwardauth"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// enforceCmd dispatches the enforce subcommands.
func enforceCmd(ctx context.Context, args []string, stdout io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, `Usage: iotwatch enforce <subcommand> [flags]

Applies iotwatch decisions at an enforcement point.

Subcommands:
  http       forward-auth endpoint for NGINX auth_request, Envoy ext_authz (HTTP service)
             and Traefik forwardAuth, answering allow/deny from a local, verified copy
             of the active decisions (KV bucket %s)
  mosquitto  disable/enable Mosquitto clients through its dynamic-security plugin
  keygen     generate an ed25519 key pair for signing decisions, unblocks or receipts

Run 'iotwatch enforce <subcommand> --help' for its flags.
`, schemas.KVActiveBlocks)
	}
	if len(args) == 0 {
		usage(stdout)
		return usageError{errors.New("missing subcommand")}
	}
	switch args[0] {
	case "-h", "--help", "help":
		usage(stdout)
		return nil
	case "http":
		return enforceHTTPCmd(ctx, args[1:], stdout)
	case "mosquitto":
		return enforceMosquittoCmd(ctx, args[1:], stdout)
	case "keygen":
		return enforceKeygenCmd(args[1:], stdout)
	}
	usage(stdout)
	return usageError{fmt.Errorf("unknown subcommand %q", args[0])}
}

// enforcerFlags are the flags every enforcement point has.
type enforcerFlags struct {
	natsURL       string
	keys          string
	allowUnsigned bool
	enforcerID    string
	receiptKey    string
	stateFile     string
	logLevel      string
	conn          connFlags          // NATS authentication and TLS
	natsOpts      bus.ConnectOptions // resolved by clientOptions
	fs            *flag.FlagSet      // to tell a given --enforcer-id from its default
}

func (e *enforcerFlags) register(fs *flag.FlagSet, idPrefix, stateHelp string) {
	host, _ := os.Hostname()
	fs.StringVar(&e.natsURL, "nats", defaultNATS, "NATS server URL(s) holding the decisions, comma-separated")
	fs.StringVar(&e.keys, "keys", "", "trusted public key file(s), comma-separated (see 'iotwatch enforce keygen'); during a key rotation give the old and the new key")
	fs.BoolVar(&e.allowUnsigned, "allow-unsigned", false, "also enforce unsigned decisions (testing only: anyone who can write the KV bucket can then block)")
	fs.StringVar(&e.enforcerID, "enforcer-id", sanitizeID(idPrefix+host), "name of this enforcement point in apply receipts ([A-Za-z0-9._-], at most 64); with --receipt-key, the key's id")
	fs.StringVar(&e.receiptKey, "receipt-key", "", "ed25519 private key file ('iotwatch enforce keygen --id ENFORCER-ID') to sign apply receipts with; its key id is the enforcer id, and the pipeline trusts its .pub (run --enforcer-keys); without it receipts are unsigned")
	e.fs = fs
	fs.StringVar(&e.stateFile, "state", "", stateHelp)
	fs.StringVar(&e.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	e.conn.registerNATS(fs, schemas.InboxEnforcer)
}

// clientOptions checks the shared flags and returns the logger and the
// enforcement client's options with the trusted keys loaded.
func (e *enforcerFlags) clientOptions() (enforce.Options, *slog.Logger, error) {
	log, err := newLogger(os.Stderr, e.logLevel)
	if err != nil {
		return enforce.Options{}, nil, err
	}
	if e.keys == "" && !e.allowUnsigned {
		return enforce.Options{}, nil, usageError{errors.New("cannot enforce: --keys is required (or --allow-unsigned for tests)")}
	}
	var receiptKey ed25519.PrivateKey
	if e.receiptKey != "" {
		keyID, priv, err := schemas.LoadPrivateKey(e.receiptKey)
		if err != nil {
			return enforce.Options{}, nil, usageError{fmt.Errorf("cannot use --receipt-key %q: %w", e.receiptKey, err)}
		}
		given := false
		e.fs.Visit(func(f *flag.Flag) { given = given || f.Name == "enforcer-id" })
		switch {
		case !given:
			e.enforcerID = keyID
		case keyID != e.enforcerID:
			return enforce.Options{}, nil, usageError{fmt.Errorf("cannot use --receipt-key %q: its key id %q is not --enforcer-id %q (a receipt key's id is its enforcement point's id)", e.receiptKey, keyID, e.enforcerID)}
		}
		receiptKey = priv
	}
	if !schemas.ValidKeyID(e.enforcerID) {
		return enforce.Options{}, nil, usageError{fmt.Errorf("cannot use --enforcer-id %q: want 1-64 of [A-Za-z0-9._-]", e.enforcerID)}
	}
	if e.natsOpts, err = e.conn.natsOptions(); err != nil { // a missing secret fails now, not in the background
		return enforce.Options{}, nil, err
	}
	o := enforce.Options{EnforcerID: e.enforcerID, AllowUnsigned: e.allowUnsigned, StateFile: e.stateFile, Log: log, ReceiptKey: receiptKey}
	if e.keys != "" {
		if o.Keys, err = schemas.LoadPublicKeys(splitList(e.keys)...); err != nil {
			return enforce.Options{}, nil, usageError{fmt.Errorf("cannot use --keys %q: %w", e.keys, err)}
		}
	}
	return o, log, nil
}

// runClient connects to NATS (retrying until ctx ends) and runs client; it
// logs instead of returning errors: the enforcement point keeps answering
// from its cache meanwhile.
func (e *enforcerFlags) runClient(ctx context.Context, client *enforce.Client, log *slog.Logger) {
	nc, js, err := bus.ConnectWith(ctx, e.natsURL, "iotwatch-enforce-"+e.enforcerID, e.natsOpts, log)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("cannot connect to nats", "err", err)
		}
		return
	}
	defer nc.Close()
	if err := client.Run(ctx, js); err != nil {
		log.Error("enforcement client stopped", "err", err)
	}
}

// enforceHTTPOptions are the flags of `enforce http`.
type enforceHTTPOptions struct {
	enforcerFlags
	listen       string
	deviceHeader string
	keyHeader    string
	tenantHeader string
	ipHeaders    string
	denyStatus   int
	throttleRPS  float64
	keySecret    string
	maxConns     int
	maxHeader    int
	idleTimeout  time.Duration
}

func enforceHTTPCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("enforce http", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o enforceHTTPOptions
	o.register(fs, "enforce-", "file keeping the active decisions across restarts (enforced at start, before NATS answers); empty: start empty")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9181", "address of the forward-auth endpoint (/check) and of /healthz and /metrics")
	def := forwardauth.DefaultConfig()
	fs.StringVar(&o.deviceHeader, "identity-header", def.DeviceHeader, "request header carrying the device id (matched against device-scoped decisions)")
	fs.StringVar(&o.keyHeader, "key-header", def.KeyHeader, "request header carrying the API key id (matched against api_key-scoped decisions)")
	fs.StringVar(&o.tenantHeader, "tenant-header", def.TenantHeader, "request header carrying the tenant (matched against tenant-scoped decisions)")
	fs.StringVar(&o.ipHeaders, "ip-header", strings.Join(def.IPHeaders, ","), "request headers carrying the client IP, comma-separated, first present wins; of a list (X-Forwarded-For) the last address is used, the one your gateway appended")
	fs.IntVar(&o.denyStatus, "deny-status", def.DenyStatus, "status of a denied check (NGINX auth_request accepts only 401 or 403)")
	fs.Float64Var(&o.throttleRPS, "throttle-rps", def.ThrottleRPS, "requests per second let through for a throttled scope (a token bucket per decision); 0 denies throttled requests")
	fs.StringVar(&o.keySecret, "key-secret-file", "", "the pipeline's --key-secret-file: API keys in --key-header are then hashed as the pipeline hashes keys found in logs (HMAC-SHA256, 16 hex digits) before matching; without it they are matched as sent")
	fs.IntVar(&o.maxConns, "max-conns", forwardauth.DefaultMaxConns, "most connections open at once; beyond it new ones wait in the kernel's backlog (0: no limit)")
	fs.IntVar(&o.maxHeader, "max-header-bytes", forwardauth.DefaultMaxHeaderBytes, "largest request header accepted (a larger one is answered 431)")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", time.Minute, "close a keep-alive connection idle this long")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch enforce http --keys FILE[,FILE] [flags]

Serves a forward-auth endpoint that answers from a local copy of the active
decisions in KV bucket %[1]s: it loads them all, then watches the bucket, and
verifies every decision's ed25519 signature against --keys before enforcing it.
Each applied decision is acknowledged with a receipt on %[2]s, signed with
--receipt-key.

  /check (any method, any path below it)   200 allow, --deny-status deny
      with headers %[3]s (block or throttle), %[4]s and %[5]s
  /healthz   200 once the first sync with NATS is done, 503 before
  /metrics   Prometheus text format

A request matches a decision by its device (--identity-header: scope device),
API key (--key-header, hashed with --key-secret-file as the pipeline hashes
keys: scope api_key), client IP (--ip-header: scopes ip and cidr) or tenant
(--tenant-header: scope tenant). Decisions of the MQTT scopes (mqtt_username,
mqtt_client_id) name broker identities that no HTTP request carries: they are
acknowledged not_applicable and never enforced here. A decision is enforced
until its expires_at even if NATS is unreachable; before the first sync (and
without --state) every request is allowed.
Gateway configurations: deploy/nginx-auth, deploy/envoy-authz, deploy/traefik.

Flags:
`, schemas.KVActiveBlocks, schemas.SubjectDecisionsApplied, schemas.HeaderEnforceAction, schemas.HeaderEnforceScope, schemas.HeaderEnforceDecision)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	copts, log, err := o.clientOptions()
	if err != nil {
		return err
	}
	if o.denyStatus < 400 || o.denyStatus > 599 {
		return usageError{fmt.Errorf("cannot use --deny-status %d: want a 4xx or 5xx status", o.denyStatus)}
	}
	if o.throttleRPS < 0 {
		return usageError{fmt.Errorf("cannot use --throttle-rps %g: want >= 0", o.throttleRPS)}
	}
	if o.maxConns < 0 || o.maxHeader <= 0 || o.idleTimeout <= 0 {
		return usageError{fmt.Errorf("cannot use --max-conns %d, --max-header-bytes %d, --idle-timeout %v: want >= 0, > 0 and > 0", o.maxConns, o.maxHeader, o.idleTimeout)}
	}
	ipHeaders := splitList(o.ipHeaders)
	var secret []byte
	if o.keySecret != "" {
		if secret, err = readKeySecret(o.keySecret); err != nil {
			return usageError{fmt.Errorf("cannot use --key-secret-file: %w", err)}
		}
	}
	copts.Scopes = forwardauth.Scopes()
	client, err := enforce.New(copts)
	if err != nil {
		return err
	}
	if secret == nil {
		log.Warn("enforce http without --key-secret-file: api_key decisions match the key header as sent, so blocks of API keys the pipeline hashed never match")
	}
	h := forwardauth.New(client, forwardauth.Config{
		DeviceHeader: o.deviceHeader, KeyHeader: o.keyHeader, TenantHeader: o.tenantHeader,
		IPHeaders: ipHeaders, DenyStatus: o.denyStatus, ThrottleRPS: o.throttleRPS,
		KeyHash: formats.KeyHasher(secret),
	})

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return usageError{fmt.Errorf("cannot listen on --listen %q: %w", o.listen, err)}
	}
	ln = forwardauth.LimitListener(ln, o.maxConns)
	srv := &http.Server{Handler: h.Mux(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: o.idleTimeout,
		MaxHeaderBytes: o.maxHeader}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("enforce http listening", "addr", ln.Addr().String(), "enforcer", o.enforcerID, "keys", len(copts.Keys))
	fmt.Fprintf(stdout, "iotwatch enforce http: listening on %s\n", ln.Addr())

	// The endpoint answers from the cache (or the state file) while NATS is
	// being reached.
	var wg sync.WaitGroup
	runCtx, stopRun := context.WithCancel(ctx)
	wg.Go(func() {
		o.runClient(runCtx, client, log)
	})
	var result error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		result = fmt.Errorf("cannot serve on %q: %w", o.listen, err)
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	stopRun()
	wg.Wait()
	st := client.Stats()
	log.Info("enforce http stopped", "active", st.Active, "applied", st.Applied, "removed", st.Removed, "receipts", st.ReceiptsSent)
	return result
}

func enforceKeygenCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("enforce keygen", flag.ContinueOnError)
	fs.SetOutput(stdout)
	id := fs.String("id", "", "key id, such as iotwatch-2026-11 ([A-Za-z0-9._-], at most 64); a new id for every key")
	out := fs.String("out", "", "path prefix: writes PREFIX.key (private, mode 0600) and PREFIX.pub (public); existing files are not overwritten")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch enforce keygen --id KEYID --out PREFIX

Generates an ed25519 key pair for signing decisions. The pipeline signs with
PREFIX.key; enforcement points trust PREFIX.pub (--keys). Rotation: give
enforcement points the new .pub next to the old one, switch the pipeline to the
new .key, and drop the old .pub once the longest block TTL has passed.

An enforcement point's receipt key has its enforcer id as key id (--id
nginx-edge-1): it signs receipts with PREFIX.key (enforce --receipt-key), and
the pipeline trusts PREFIX.pub (run --enforcer-keys). To rotate it, generate a
new pair under the same id, add its .pub to --enforcer-keys, then switch the
enforcement point to the new .key and drop the old .pub.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{errors.New("cannot generate key: --out is required")}
	}
	priv, pub, err := schemas.GenerateKey(*id)
	if err != nil {
		return usageError{fmt.Errorf("cannot use --id %q: %w", *id, err)}
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{*out + ".key", priv, 0o600}, {*out + ".pub", pub, 0o644}} {
		fh, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return fmt.Errorf("cannot write key file: %w", err)
		}
		_, err = fh.Write(f.data)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("cannot write key file %q: %w", f.path, err)
		}
	}
	fmt.Fprintf(stdout, "wrote %s.key (private, key id %q) and %s.pub (public)\n", *out, *id, *out)
	return nil
}

// sanitizeID maps s onto [A-Za-z0-9._-], at most 64 characters.
func sanitizeID(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
