package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/mosquitto"
	"github.com/iotwatch/iotwatch/internal/mqtt"
	"github.com/iotwatch/iotwatch/schemas"
)

// enforceMosquittoOptions are the flags of `enforce mosquitto`.
type enforceMosquittoOptions struct {
	enforcerFlags
	broker       string
	username     string
	passwordFile string
	clientID     string
	scopes       string
	retry        time.Duration
	metricsAddr  string
}

func enforceMosquittoCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("enforce mosquitto", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o enforceMosquittoOptions
	o.register(fs, "mosquitto-", "file keeping the active decisions across restarts; FILE.dynsec then keeps the usernames this enforcer disabled, so that blocks lifted while it was down are lifted at start; empty: start empty")
	fs.StringVar(&o.broker, "broker", "127.0.0.1:1883", "Mosquitto broker address host:port (plain TCP listener with the dynamic-security plugin)")
	fs.StringVar(&o.username, "username", "", "dynamic-security admin user to connect as (needs publish on $CONTROL/dynamic-security/# and subscribe to its response topic, as the role mosquitto_ctrl dynsec init creates); required")
	fs.StringVar(&o.passwordFile, "password-file", "", "file holding that user's password (first line); required")
	fs.StringVar(&o.clientID, "client-id", "", "MQTT client id of this enforcer; empty: iotwatch-<enforcer-id>")
	fs.StringVar(&o.scopes, "scopes", strings.Join(mosquitto.Scopes(), ","), "decision scopes whose value is a broker username, comma-separated: mqtt_username, and device only where HTTP device ids and MQTT usernames are the same identities; every other scope is acknowledged not_applicable")
	fs.DurationVar(&o.retry, "retry", 10*time.Second, "how soon a refused or failed dynamic-security command, or a lost broker connection, is tried again")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics (broker connection, commands, decisions) and /healthz (200 while the broker connection is up) here; empty: off")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch enforce mosquitto --broker HOST:PORT --username ADMIN --password-file FILE --keys FILE[,FILE] [flags]

Applies iotwatch decisions to a Mosquitto 2 broker through its dynamic-security
plugin. It keeps a verified copy of the active decisions in KV bucket %[1]s
(initial sync, then watch; ed25519 signatures checked against --keys) and
publishes commands on %[2]s:

  block of scope mqtt_username (see --scopes)
        disableClient <value>: the broker refuses the username's connections
        and disconnects its connected clients
  unblock (signed), expiry (expires_at; found within a second)
        enableClient <value>, once no other active block names that username

Dynamic security disables usernames: it cannot block a client id, an address
or a rate. Each decision is acknowledged on %[3]s with a result:
applied once the broker confirmed disableClient; failed (with the broker's
words) while the broker refuses it (an unknown username) or cannot be reached,
retried every --retry and acknowledged applied when it succeeds; not_applicable
for every other scope (device, api_key, ip, cidr, tenant, mqtt_client_id) and
for throttles, which are never sent to the broker nor retried. The pipeline's
--block-scope auto blocks devices of MQTT sources by mqtt_username when they
are identified by username (see --identity).

At start it connects to the broker and runs a read-only dynamic-security
command: a broker that is down, a wrong password or a user without the admin
role stops it with an error (exit 1) before it declares itself started. A
connection lost later is re-established every --retry, logged (at most once a
minute) and counted in %[4]s (see --metrics-addr).

Flags:
`, schemas.KVActiveBlocks, mosquitto.DynSecTopic, schemas.SubjectDecisionsApplied, schemas.MetricMosquittoDisconnects)
		fs.PrintDefaults()
	}
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if o.username == "" || o.passwordFile == "" {
		return usageError{errors.New("cannot enforce: --username and --password-file are required")}
	}
	pw, err := os.ReadFile(o.passwordFile)
	if err != nil {
		return usageError{fmt.Errorf("cannot read --password-file: %w", err)}
	}
	if i := bytes.IndexByte(pw, '\n'); i >= 0 {
		pw = pw[:i]
	}
	pw = bytes.TrimRight(pw, "\r")
	copts, log, err := o.clientOptions()
	if err != nil {
		return err
	}
	scopes := map[string]bool{}
	for _, s := range splitList(o.scopes) {
		if s != schemas.ScopeMQTTUsername && s != schemas.ScopeDevice {
			return usageError{fmt.Errorf("cannot use --scopes %q: scope %q is not mqtt_username or device", o.scopes, s)}
		}
		scopes[s] = true
	}
	if len(scopes) == 0 {
		return usageError{fmt.Errorf("cannot use --scopes %q: want mqtt_username (or device)", o.scopes)}
	}
	if o.retry <= 0 {
		return usageError{fmt.Errorf("cannot use --retry %s: want > 0", o.retry)}
	}
	if o.clientID == "" {
		o.clientID = "iotwatch-" + o.enforcerID
	}
	mopts := mqtt.Options{Addr: o.broker, ClientID: o.clientID, Username: o.username, Password: string(pw)}
	var client *enforce.Client // set below, before Run reports anything
	mc := mosquitto.Config{Scopes: scopes, Retry: o.retry, Log: log,
		Report: func(r schemas.ApplyReceipt) { client.Report(r) },
		Dial:   func(ctx context.Context) (*mosquitto.DynSec, error) { return mosquitto.DialDynSec(ctx, mopts) }}
	if o.stateFile != "" {
		mc.OwnedFile = o.stateFile + ".dynsec"
	}
	m, err := mosquitto.New(mc)
	if err != nil {
		return err
	}

	copts.OnApply, copts.OnExpire = m.OnApply, m.OnExpire
	copts.Scopes, copts.Deferred = slices.Sorted(maps.Keys(scopes)), true
	client, err = enforce.New(copts)
	if err != nil {
		return err
	}
	m.Seed(client.Active())
	if err := m.Start(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	if o.metricsAddr != "" {
		ln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return usageError{fmt.Errorf("cannot listen on --metrics-addr %q: %w", o.metricsAddr, err)}
		}
		srv := &http.Server{Handler: mosquittoMetrics(m, client), ReadHeaderTimeout: 5 * time.Second}
		wg.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("cannot serve metrics", "addr", o.metricsAddr, "err", err)
			}
		})
		wg.Go(func() {
			<-ctx.Done()
			srv.Close()
		})
	}
	log.Info("enforce mosquitto started", "broker", o.broker, "enforcer", o.enforcerID, "keys", len(copts.Keys))
	fmt.Fprintf(stdout, "iotwatch enforce mosquitto: broker %s\n", o.broker)

	wg.Go(func() {
		o.runClient(ctx, client, log)
	})
	m.Run(ctx)
	wg.Wait()
	st, ms := client.Stats(), m.Stats()
	log.Info("enforce mosquitto stopped", "active", st.Active, "applied", st.Applied, "removed", st.Removed, "receipts", st.ReceiptsSent,
		"disabled", ms.Disabled, "enabled", ms.Enabled, "ignored_throttle", ms.IgnoredThrottle, "ignored_scope", ms.IgnoredScope, "refused", ms.Refused)
	return nil
}

// mosquittoMetrics serves /metrics (the broker connection's and the
// decisions' counters) and /healthz (503 while the broker connection is down).
func mosquittoMetrics(m *mosquitto.Enforcer, c *enforce.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		m.WriteMetrics(w)
		st := c.Stats()
		fmt.Fprintf(w, "# TYPE %s gauge\n%s %d\n", schemas.MetricEnforceActive, schemas.MetricEnforceActive, st.Active)
		fmt.Fprintf(w, "# TYPE %s counter\n%s %d\n", schemas.MetricEnforceApplied, schemas.MetricEnforceApplied, st.Applied)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !m.Stats().Connected {
			http.Error(w, "mosquitto connection down", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
