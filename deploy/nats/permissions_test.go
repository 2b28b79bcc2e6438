// Package permissions_test loads the shipped NATS account and permission files
// (deploy/nats/*.conf, as they are) into the real nats-server binary and checks
// that each role can do its job with iotwatch's own code, and nothing else.
package permissions_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/enforce/unblock"
	"github.com/iotwatch/iotwatch/internal/chserver/chtest"
	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/iotwatch/iotwatch/internal/pipetest"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/cluster"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/receipts"
	"github.com/iotwatch/iotwatch/pipeline/sink"
	"github.com/iotwatch/iotwatch/schemas"
)

var clickhouse chtest.Shared

func TestMain(m *testing.M) { os.Exit(clickhouse.Main(m)) }

// Users of accounts.conf, with the passwords the test gives the server.
const (
	userPipeline = "iotwatch-pipeline"
	userShipper  = "iotwatch-shipper"
	userEnforcer = "iotwatch-enforcer"
	userAnalyst  = "iotwatch-analyst"
	userSOC      = "iotwatch-soc"
	userIngest   = "iotwatch-ingest"
	userScorer   = "iotwatch-scorer"
)

var passwordEnv = map[string]string{
	userPipeline: "IOTWATCH_PIPELINE_PASSWORD",
	userShipper:  "IOTWATCH_SHIPPER_PASSWORD",
	userEnforcer: "IOTWATCH_ENFORCER_PASSWORD",
	userAnalyst:  "IOTWATCH_ANALYST_PASSWORD",
	userSOC:      "IOTWATCH_SOC_PASSWORD",
	userIngest:   "IOTWATCH_INGEST_PASSWORD",
	userScorer:   "IOTWATCH_SCORER_PASSWORD",
}

// inbox is each role's reply inbox prefix: the default --nats-inbox-prefix of
// the commands that connect as it.
var inbox = map[string]string{
	userPipeline: schemas.InboxPipeline,
	userShipper:  schemas.InboxShipper,
	userEnforcer: schemas.InboxEnforcer,
	userAnalyst:  schemas.InboxAnalyst,
	userSOC:      schemas.InboxSOC,
	userIngest:   schemas.InboxIngest,
	userScorer:   schemas.InboxScorer,
}

func password(user string) string { return "pw-" + user }

// StartServer runs the real nats-server on the shipped accounts.conf (which
// includes the role files), included as it is from a configuration that
// only adds the test's port and store; the shipped nats-server.conf, which
// includes it the same way, must pass the server's own check (-t).
func StartServer(t *testing.T) *natsserver.Process {
	t.Helper()
	bin, err := natsserver.FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, bin)
}

// StartModuleServer is StartServer on the nats-server of go.mod's version
// (natsserver.FindModuleBinary, `make nats-server`): the scale-out features
// (pinned consumers, per-key TTLs) need 2.11 or later, Debian's is 2.9.
func StartModuleServer(t *testing.T) *natsserver.Process {
	t.Helper()
	bin, err := natsserver.FindModuleBinary()
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, bin)
}

func startServer(t *testing.T, bin string) *natsserver.Process {
	t.Helper()
	accounts, err := filepath.Abs("accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	var env []string
	for user, name := range passwordEnv {
		env = append(env, name+"="+password(user))
	}
	check := exec.Command(bin, "-c", "nats-server.conf", "-t")
	check.Env = append(os.Environ(), env...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("the shipped nats-server.conf does not load: %v: %s", err, out)
	}
	dir := t.TempDir()
	rel, err := filepath.Rel(dir, accounts) // nats-server resolves includes relative to the including file
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("include %q\n", rel)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.StartProcess(natsserver.ProcessOptions{Binary: bin, Config: conf, StoreDir: t.TempDir(), Env: env})
	if err != nil {
		t.Fatalf("cannot start nats-server on the shipped permission files: %v", err)
	}
	t.Cleanup(func() {
		srv.Stop()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", srv.Output())
		}
	})
	return srv
}

// client is one role's connection; errs receives the server's asynchronous
// errors (permission violations).
type client struct {
	user string
	nc   *nats.Conn
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []string
}

func connect(t *testing.T, srv *natsserver.Process, user string) *client {
	t.Helper()
	c := &client{user: user}
	nc, err := nats.Connect(srv.URL(), nats.UserInfo(user, password(user)), nats.Name(user), nats.CustomInboxPrefix(inbox[user]),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
		}))
	if err != nil {
		t.Fatalf("cannot connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// violations returns the permission violations the server reported so far.
func (c *client) violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.errs...)
}

// noViolations fails the test if the role was refused anything while doing
// its job (asynchronous paths such as flow-control replies included).
func (c *client) noViolations(t *testing.T) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if v := c.violations(); len(v) > 0 {
		t.Errorf("%s was refused while doing its job: %q", c.user, v)
	}
}

// denied publishes to subject and waits for the server to refuse it.
func (c *client) denied(t *testing.T, subject string) {
	t.Helper()
	c.waitViolation(t, "Publish to \""+subject+"\"", func() error { return c.nc.Publish(subject, []byte("{}")) })
}

// deniedSub subscribes to subject and waits for the server to refuse it.
func (c *client) deniedSub(t *testing.T, subject string) {
	t.Helper()
	c.waitViolation(t, "Subscription to \""+subject+"\"", func() error {
		_, err := c.nc.SubscribeSync(subject)
		return err
	})
}

func (c *client) waitViolation(t *testing.T, what string, do func() error) {
	t.Helper()
	if err := do(); err != nil {
		t.Fatalf("%s: %s: %v", c.user, what, err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // a hang bound: the server answers at once
	for {
		for _, v := range c.violations() {
			if strings.Contains(v, what) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("%s was allowed %s (violations reported: %q)", c.user, what, c.violations())
			return
		}
		time.Sleep(10 * time.Millisecond) // polling the client's error list
	}
}

func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a hang bound, not an expectation
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %s", what, state)
		}
		time.Sleep(20 * time.Millisecond) // polling servers and counters
	}
}

func line(device string, at time.Time) string {
	return fmt.Sprintf(`{"ts":%q,"src":"gateway","tenant":"acme","device":%q,"class":"meter/m1","ip":"203.0.113.9","country":"DE","method":"POST","path":"/v1/devices/%s/readings","status":200,"auth":"ok"}`,
		at.Format(time.RFC3339Nano), device, device)
}

// TestRoles: each role of accounts.conf does its job with iotwatch's code on
// the real nats-server (the pipeline sets up JetStream, consumes and acks,
// publishes decisions and stores receipts; a shipper publishes logs; an
// enforcement point syncs the bucket and sends receipts; an analyst reads;
// the SOC lifts a block) and is refused what is not its job: the shipper
// cannot write decisions, the enforcement point cannot purge or delete the
// bucket or publish decisions, the analyst cannot publish at all, and no one
// but the enforcement points writes receipts.
func TestRoles(t *testing.T) {
	srv := StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	const keyID = "pipeline-1"

	// The pipeline: streams, bucket and consumers, as `iotwatch run` does.
	pl := connect(t, srv, userPipeline)
	cfg := bus.DefaultStreamsConfig()
	if _, _, err := bus.Ensure(ctx, pl.js, cfg); err != nil {
		t.Fatalf("pipeline cannot create its streams: %v", err)
	}
	cons, kv, err := bus.Ensure(ctx, pl.js, cfg) // and update them
	if err != nil {
		t.Fatalf("pipeline cannot update its streams: %v", err)
	}
	np := sink.NewNATSPublisher(pl.js, kv, log)
	if err := np.SetSigner(keyID, priv); err != nil {
		t.Fatal(err)
	}
	allow, err := decide.ParseAllowlist([]string{"meter-allowed"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.LiftAllowlisted(ctx, kv, allow, np, "iotwatch", time.Now()); err != nil {
		t.Fatalf("pipeline cannot read the bucket: %v", err)
	}
	now := time.Now().UTC()
	block := schemas.Decision{ID: "dec-1", Action: schemas.ActionBlock, Scope: schemas.ScopeDevice, Value: "meter-9",
		Tenant: "acme", Device: "meter-9", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "rate", Score: 0.99,
		AlertID: "alert-1", Issuer: "iotwatch", SchemaV: 1}
	if err := schemas.SignDecision(&block, keyID, priv); err != nil {
		t.Fatal(err)
	}
	if err := np.PublishDecisions(ctx, []schemas.Decision{block}); err != nil {
		t.Fatalf("pipeline cannot publish a decision: %v", err)
	}
	if err := np.PublishAlerts(ctx, []schemas.Alert{{ID: "alert-1", Device: "meter-9", Severity: schemas.SeverityHigh, SchemaV: 1}}); err != nil {
		t.Fatalf("pipeline cannot publish an alert: %v", err)
	}
	if err := np.PublishIncidents(ctx, []schemas.Incident{{ID: "inc-alert-1", Version: 1, Severity: schemas.SeverityHigh, SchemaV: 1}}); err != nil {
		t.Fatalf("pipeline cannot publish an incident: %v", err)
	}
	if err := np.DeadLetters(ctx, bus.LogSubject(schemas.FormatJSON, "gw1"), 1, []schemas.DeadLetter{{Reason: schemas.DeadLetterUnknownFormat, Detail: "test", Size: 1, Record: []byte("x")}}); err != nil {
		t.Fatalf("pipeline cannot dead-letter: %v", err)
	}
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: clickhouse.Get(t).DSN(), Database: "perms", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	for _, run := range []func(context.Context, jetstream.JetStream, *sink.ClickHouse, *slog.Logger) error{receipts.Run, receipts.RunUnblocks} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := run(runCtx, pl.js, ch, log); err != nil {
				t.Errorf("pipeline cannot store receipts or unblocks: %v", err)
			}
		}()
	}

	// A shipper publishes logs as `iotwatch ship` does; the pipeline scores
	// and acks every one (the server confirms: nothing left ack-pending).
	sh := connect(t, srv, userShipper)
	const msgs = 20
	start := time.Date(2026, 1, 5, 8, 0, 0, 0, time.UTC)
	for i := range msgs {
		data := line(fmt.Sprintf("meter-%d", i%4), start.Add(time.Duration(i)*time.Second))
		if _, err := sh.js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw1"), []byte(data),
			jetstream.WithMsgID(fmt.Sprint("gw1-", i)), jetstream.WithExpectStream(schemas.StreamLogs)); err != nil {
			t.Fatalf("shipper cannot publish a log: %v", err)
		}
	}
	stream, err := pl.js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Workers: 2, FlushInterval: 20 * time.Millisecond, Stream: stream,
		SigningKeyID: keyID, SigningKey: priv}, cons, ch, np, log)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(runCtx); err != nil {
			t.Errorf("pipeline run: %v", err)
		}
	}()
	waitUntil(t, "the pipeline acked every log", func() (bool, string) {
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return p.M.Acked.Load() == msgs && info.NumAckPending == 0 && info.NumPending == 0,
			fmt.Sprintf("acked %d of %d; server: pending %d, ack-pending %d, redelivered %d", p.M.Acked.Load(), msgs, info.NumPending, info.NumAckPending, info.NumRedelivered)
	})
	// Re-learning after a checkpoint reads the logs with an ordered consumer.
	short, cancelShort := context.WithTimeout(ctx, 30*time.Second) // a refused request is never answered
	defer cancelShort()
	oc, err := stream.OrderedConsumer(short, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 2})
	if err != nil {
		t.Fatalf("pipeline cannot re-read the logs: %v", err)
	}
	if m, err := oc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil {
		t.Fatalf("pipeline cannot re-read the logs: %v", err)
	} else if md, _ := m.Metadata(); md.Sequence.Stream != 2 {
		t.Fatalf("re-read sequence %d, want 2", md.Sequence.Stream)
	}

	// An enforcement point syncs the bucket, enforces the block and sends its
	// receipt, which the pipeline stores.
	en := connect(t, srv, userEnforcer)
	ec, err := enforce.New(enforce.Options{EnforcerID: "edge-1", Keys: map[string]ed25519.PublicKey{keyID: pub}})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ec.Run(runCtx, en.js); err != nil {
			t.Errorf("enforcement point: %v", err)
		}
	}()
	waitUntil(t, "the enforcement point applied the block and sent its receipt", func() (bool, string) {
		st := ec.Stats()
		return ec.Check(enforce.Request{Device: "meter-9", Tenant: "acme"}).Action == schemas.ActionBlock && st.ReceiptsSent > 0,
			fmt.Sprintf("%+v", st)
	})
	waitUntil(t, "the pipeline read the receipt", func() (bool, string) {
		info, err := pl.js.Consumer(ctx, schemas.StreamDecisions, schemas.ConsumerReceipts)
		if err != nil {
			return false, err.Error()
		}
		ci := info.CachedInfo()
		if ci, err = info.Info(ctx); err != nil {
			return false, err.Error()
		}
		return ci.Delivered.Consumer > 0 && ci.NumAckPending == 0 && ci.NumPending == 0, fmt.Sprintf("%+v", ci)
	})

	// An analyst reads the decisions stream and the bucket, as `iotwatch inspect` does.
	an := connect(t, srv, userAnalyst)
	name, err := an.js.StreamNameBySubject(ctx, schemas.SubjectDecisionsAll)
	if err != nil {
		t.Fatalf("analyst cannot find the decisions stream: %v", err)
	}
	ds, err := an.js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("analyst cannot read stream %s: %v", name, err)
	}
	aoc, err := ds.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{schemas.SubjectDecisionsPrefix + "." + schemas.ActionBlock}})
	if err != nil {
		t.Fatalf("analyst cannot read the decisions: %v", err)
	}
	if m, err := aoc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || !strings.Contains(string(m.Data()), block.ID) {
		t.Fatalf("analyst reads %v, want decision %s", err, block.ID)
	}
	is, err := an.js.Stream(ctx, schemas.StreamIncidents)
	if err != nil {
		t.Fatalf("analyst cannot read stream %s: %v", schemas.StreamIncidents, err)
	}
	ioc, err := is.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("analyst cannot read the incidents: %v", err)
	}
	if m, err := ioc.Next(jetstream.FetchMaxWait(10 * time.Second)); err != nil || !strings.Contains(string(m.Data()), "inc-alert-1") {
		t.Fatalf("analyst reads %v, want incident inc-alert-1", err)
	}
	akv, err := an.js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		t.Fatalf("analyst cannot open the bucket: %v", err)
	}
	if _, err := akv.Get(ctx, schemas.KVKey(schemas.ScopeDevice, "meter-9")); err != nil {
		t.Fatalf("analyst cannot read the block: %v", err)
	}

	// The SOC lifts the block, as `iotwatch unblock` does.
	soc := connect(t, srv, userSOC)
	skv, err := soc.js.KeyValue(ctx, schemas.KVActiveBlocks)
	if err != nil {
		t.Fatalf("soc cannot open the bucket: %v", err)
	}
	res, err := unblock.Lift(ctx, soc.js, skv, unblock.Request{Scope: schemas.ScopeDevice, Value: "meter-9", Reason: "ticket 1",
		Issuer: "soc", KeyID: keyID, Key: priv, Now: time.Now()}, log)
	if err != nil || !res.Published {
		t.Fatalf("soc cannot lift the block: %+v, %v", res, err)
	}
	waitUntil(t, "the enforcement point lifted the block", func() (bool, string) {
		return ec.Check(enforce.Request{Device: "meter-9", Tenant: "acme"}).Action == "", fmt.Sprintf("%+v", ec.Stats())
	})

	// The pipeline counts the cluster-wide block cap and watches the shared
	// allowlist, as `run` does; the SOC writes the allowlist.
	bkv, err := pl.js.KeyValue(ctx, schemas.KVBudgets)
	if err != nil {
		t.Fatalf("pipeline cannot open the budgets bucket: %v", err)
	}
	budget := cluster.NewKVBudget(bkv, cluster.BudgetConfig{Name: schemas.BudgetBlocks, Max: 1, Timeout: 30 * time.Second}, log)
	if !budget.Take(1, 1) || budget.Take(1, 2) || budget.Fallbacks.Load() != 0 {
		t.Fatalf("pipeline cannot count the block cap in the bucket (%d takes answered locally)", budget.Fallbacks.Load())
	}
	pkv, err := pl.js.KeyValue(ctx, schemas.KVAllowlist)
	if err != nil {
		t.Fatalf("pipeline cannot open the allowlist bucket: %v", err)
	}
	ref := decide.NewAllowlistRef(nil)
	ready := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := cluster.NewAllowlist(pkv, nil, ref, nil, log).Run(runCtx, ready); err != nil {
			t.Errorf("pipeline cannot watch the allowlist: %v", err)
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute): // a hang bound
		t.Fatal("the pipeline never read the allowlist bucket")
	}
	sakv, err := soc.js.KeyValue(ctx, schemas.KVAllowlist)
	if err != nil {
		t.Fatalf("soc cannot open the allowlist bucket: %v", err)
	}
	if _, err := sakv.Put(ctx, "ticket-2", []byte("meter-allowed-2")); err != nil {
		t.Fatalf("soc cannot write the allowlist: %v", err)
	}
	waitUntil(t, "the pipeline applied the SOC's allowlist entry", func() (bool, string) {
		return ref.Load().AllowsEntity(schemas.ScopeDevice, "meter-allowed-2"), fmt.Sprintf("%d entries", ref.Load().Len())
	})
	for _, c := range []*client{pl, sh, en, an, soc} {
		c.noViolations(t)
	}

	// And nothing else.
	decision := schemas.SubjectDecisionsPrefix + "." + schemas.ActionBlock
	kvKey := bus.KVSubject(schemas.KVActiveBlocks, schemas.KVKey(schemas.ScopeDevice, "meter-1"))
	kvStream := bus.KVStream(schemas.KVActiveBlocks)
	incidents := schemas.SubjectIncidentsPrefix + "." + schemas.SeverityHigh
	allowKey := bus.KVSubject(schemas.KVAllowlist, "x")
	for _, s := range []string{decision, schemas.SubjectDecisionsApplied, schemas.SubjectAlertsPrefix + ".high", incidents, kvKey,
		"$JS.API.STREAM.CREATE.IOTWATCH_LOGS", "$JS.API.STREAM.PURGE.IOTWATCH_LOGS", "$JS.API.STREAM.DELETE." + kvStream,
		"$JS.API.CONSUMER.MSG.NEXT.IOTWATCH_LOGS." + schemas.ConsumerPipeline} {
		sh.denied(t, s)
	}
	sh.deniedSub(t, schemas.SubjectDecisionsAll)
	// No role reads another's replies (a pipeline's pulled log messages, an
	// unblock's answers): each subscribes to its own inbox prefix only.
	for _, c := range []*client{sh, en, an, soc} {
		c.deniedSub(t, "_INBOX.>")
		c.deniedSub(t, schemas.InboxPipeline+".>")
	}
	pl.deniedSub(t, schemas.InboxEnforcer+".>")
	an.deniedSub(t, schemas.InboxSOC+".x")
	for _, s := range []string{decision, schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock, kvKey, incidents,
		"$JS.API.STREAM.PURGE." + kvStream, "$JS.API.STREAM.DELETE." + kvStream, "$JS.API.STREAM.MSG.DELETE." + kvStream,
		"$JS.API.STREAM.UPDATE." + kvStream, bus.LogSubject(schemas.FormatJSON, "gw1"),
		"$JS.API.CONSUMER.MSG.NEXT.IOTWATCH_LOGS." + schemas.ConsumerPipeline} {
		en.denied(t, s)
	}
	for _, s := range []string{decision, schemas.SubjectDecisionsPrefix + "." + schemas.ActionUnblock, schemas.SubjectDecisionsApplied,
		kvKey, bus.LogSubject(schemas.FormatJSON, "gw1"), schemas.SubjectAlertsPrefix + ".high", incidents, schemas.SubjectDLQPrefix + ".x",
		"$JS.API.STREAM.PURGE." + kvStream, "$JS.API.STREAM.DELETE.IOTWATCH_LOGS",
		"$JS.API.CONSUMER.MSG.NEXT.IOTWATCH_LOGS." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.DELETE.IOTWATCH_LOGS." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.CREATE.IOTWATCH_LOGS." + schemas.ConsumerPipeline,
		"$JS.API.CONSUMER.DURABLE.CREATE.IOTWATCH_LOGS." + schemas.ConsumerPipeline,
		"$JS.ACK.IOTWATCH_LOGS." + schemas.ConsumerPipeline + ".1.1.1.1.0"} {
		an.denied(t, s)
	}
	for _, s := range []string{decision, schemas.SubjectDecisionsPrefix + "." + schemas.ActionThrottle, schemas.SubjectDecisionsApplied, incidents,
		"$JS.API.STREAM.PURGE." + kvStream, "$JS.API.STREAM.DELETE." + kvStream, bus.LogSubject(schemas.FormatJSON, "gw1")} {
		soc.denied(t, s)
	}
	for _, s := range []string{schemas.SubjectDecisionsApplied, "$JS.API.STREAM.PURGE." + kvStream, "$JS.API.STREAM.DELETE.IOTWATCH_LOGS",
		"$JS.API.STREAM.PURGE.IOTWATCH_LOGS", bus.LogSubject(schemas.FormatJSON, "gw1"), allowKey,
		"$JS.API.STREAM.PURGE." + bus.KVStream(schemas.KVBudgets)} {
		pl.denied(t, s)
	}
	// Only the SOC writes the allowlist; no one else counts the caps.
	for _, c := range []*client{sh, en, an} {
		c.denied(t, allowKey)
		c.denied(t, bus.KVSubject(schemas.KVBudgets, schemas.KVBudgetKey(schemas.BudgetBlocks, 1)))
	}
	// The bucket survived the attempts: the lift is still there.
	if e, err := kv.Get(ctx, schemas.KVKey(schemas.ScopeDevice, "meter-9")); err != nil || !strings.Contains(string(e.Value()), schemas.ActionUnblock) {
		t.Fatalf("bucket after the refused purges: %v", err)
	}
}

// TestAcksRefused: a pipeline whose user may not publish on $JS.ACK.> (the
// grant deploy/README.md used to document) counts no message acked, counts
// the refused acks and is not ready, saying why: before, every ack was
// silently dropped, the acked counter rose and /readyz said 200.
func TestAcksRefused(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	const cfg = `accounts: { A: { jetstream: enabled, users: [
  {user: noack, password: pw, permissions: {publish: {allow: ">", deny: "$JS.ACK.>"}, subscribe: {allow: ">"}}}
]}}
`
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsserver.StartProcess(natsserver.ProcessOptions{Config: conf, StoreDir: filepath.Join(dir, "js")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("noack", "pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cons, kv, err := bus.Ensure(ctx, js, bus.DefaultStreamsConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := js.Publish(ctx, bus.LogSubject(schemas.FormatJSON, "gw1"), []byte(line("meter-1", time.Date(2026, 1, 5, 8, 0, i, 0, time.UTC)))); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := sink.OpenClickHouse(ctx, sink.ClickHouseConfig{DSN: clickhouse.Get(t).DSN(), Database: "noack", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{Workers: 1, FlushInterval: 20 * time.Millisecond}, cons, ch, sink.NewNATSPublisher(js, kv, log), log)
	if err != nil {
		t.Fatal(err)
	}
	defer pipetest.Background(p)()
	waitUntil(t, "the pipeline reports the refused acks", func() (bool, string) {
		h := p.Health()
		return p.M.AckErrors.Load() > 0 && strings.Contains(h.NotReady(), "acks not confirmed"),
			fmt.Sprintf("ack errors %d, rows %d, not ready %q", p.M.AckErrors.Load(), p.M.Rows.Load(), h.NotReady())
	})
	if n := p.M.Acked.Load(); n != 0 {
		t.Errorf("acked %d messages the server refused to ack", n)
	}
	var out strings.Builder
	p.WriteMetrics(&out)
	if !strings.Contains(out.String(), schemas.MetricAckErrors+" ") {
		t.Errorf("metrics lack %s:\n%s", schemas.MetricAckErrors, out.String())
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending == 0 {
		t.Errorf("the server holds no unacked message: the acks were not refused (%+v)", info)
	}
}
