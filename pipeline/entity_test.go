package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/schemas"
)

// entityLine is a canonical JSON line of device (with its own API key) from
// ip to path, with status and auth.
func entityLine(device, ip, path string, at time.Duration, status int, auth string) string {
	return fmt.Sprintf(`{"ts":%q,"src":"gateway","tenant":"acme","device":%q,"class":"lock/l2","api_key":"key-%s","ip":%q,"country":"DE","method":"POST","path":%q,"status":%d,"auth":%q}`,
		base.Add(at).Format(time.RFC3339Nano), device, device, ip, path, status, auth)
}

// publishLines publishes lines, 50 to a message.
func publishLines(t *testing.T, e *env, lines []string) {
	t.Helper()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	for i := 0; i < len(lines); i += 50 {
		m := strings.Join(lines[i:min(i+50, len(lines))], "\n")
		if _, err := e.js.Publish(context.Background(), subject, []byte(m), jetstream.WithMsgID(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
	}
}

// entityAlerts returns the entity alerts in ClickHouse: kind, entity, first
// reason, its observed value, and time.
type storedEntityAlert struct {
	kind, entity, reason string
	observed             float64
	ms                   int64
}

func entityAlerts(t *testing.T, e *env) []storedEntityAlert {
	t.Helper()
	rows, err := e.conn.Query(context.Background(), fmt.Sprintf(
		"SELECT %s, %s, reasons[1], observed[1], time_ms FROM %s.%s FINAL WHERE %s != '' ORDER BY time_ms",
		schemas.ColEntityKind, schemas.ColEntity, e.db, schemas.TableAlerts, schemas.ColEntityKind))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedEntityAlert
	for rows.Next() {
		var a storedEntityAlert
		if err := rows.Scan(&a.kind, &a.entity, &a.reason, &a.observed, &a.ms); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// TestCredentialStuffingAcrossDevices is issue 14's first case through the
// real pipeline (embedded NATS, real ClickHouse): after half an hour of 30
// locks reporting from their own addresses, 198.51.100.7 fails to log in as
// 300 different devices, 20 a second. The address is alerted with the
// distinct count, and blocked (scope ip, signed into the KV bucket
// enforcement points read) within 10 s of the first failure's event time.
func TestCredentialStuffingAcrossDevices(t *testing.T) {
	e := setup(t, "entity_stuffing")
	var lines []string
	for i := range 30 {
		for d := range 30 {
			lines = append(lines, entityLine(fmt.Sprintf("lock-%d", d), fmt.Sprintf("203.0.113.%d", d+1), "/v1/devices/x/state",
				time.Duration(i)*time.Minute+time.Duration(d)*time.Second, 200, "ok"))
		}
	}
	attack := 30 * time.Minute
	for i := range 300 {
		lines = append(lines, entityLine(fmt.Sprintf("victim-%d", i), "198.51.100.7", "/v1/login",
			attack+time.Duration(i)*50*time.Millisecond, 401, "failed"))
	}
	publishLines(t, e, lines)
	ckpt := filepath.Join(t.TempDir(), "state.ckpt")
	p := e.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond, Checkpoint: ckpt})

	// The entities are checkpointed with the devices: a restart with
	// another worker count restores them all, each into its owner.
	restored, err := pipeline.New(pipeline.Config{Workers: 3, Checkpoint: ckpt}, e.cons, e.ch, e.pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := restored.M.Entities.Load(), p.M.Entities.Load(); got != want || got < 31 {
		t.Errorf("restored %d entities, the run held %d", got, want)
	}
	if restored.Restored().Entities != uint64(p.M.Entities.Load()) {
		t.Errorf("the checkpoint holds %d entities, the run %d", restored.Restored().Entities, p.M.Entities.Load())
	}

	alerts := entityAlerts(t, e)
	var stuffing *storedEntityAlert
	for i, a := range alerts {
		if a.kind != schemas.EntityIP || a.entity != "198.51.100.7" {
			t.Errorf("entity alert on %s %q: only the attacking address should be", a.kind, a.entity)
		}
		if a.reason == entity.ReasonCredentialStuffing {
			stuffing = &alerts[i]
		}
	}
	if stuffing == nil {
		t.Fatalf("no %s alert on 198.51.100.7; entity alerts: %+v", entity.ReasonCredentialStuffing, alerts)
	}
	if stuffing.observed < 10 {
		t.Errorf("the alert counts %v distinct identities", stuffing.observed)
	}
	var created time.Time
	err = e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT min(%s) FROM %s.%s FINAL WHERE %s = ? AND %s = ? AND %s = ?",
		schemas.ColCreatedAt, e.db, schemas.TableDecisions, schemas.ColScope, schemas.ColValue, schemas.ColAction),
		schemas.ScopeIP, "198.51.100.7", schemas.ActionBlock).Scan(&created)
	if err != nil || created.Unix() <= 0 {
		t.Fatalf("no block of 198.51.100.7 in ClickHouse (%v)", err)
	}
	if d := created.Sub(base.Add(attack)); d > 10*time.Second {
		t.Errorf("blocked %v after the first failure (event time), want within 10s", d)
	}
	// One incident: the address's alerts and the device alerts from it,
	// naming the address and holding the block's decision.
	var blockID string
	if err := e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT %s FROM %s.%s FINAL WHERE %s = ? AND %s = ? AND %s = ? LIMIT 1",
		schemas.ColID, e.db, schemas.TableDecisions, schemas.ColScope, schemas.ColValue, schemas.ColAction),
		schemas.ScopeIP, "198.51.100.7", schemas.ActionBlock).Scan(&blockID); err != nil {
		t.Fatal(err)
	}
	type incRow struct {
		id        string
		alerts    uint32
		entities  []string
		decisions []string
	}
	var incs []incRow
	deadline := time.Now().Add(60 * time.Second) // a hang bound: the run above already stored every result
	for {
		rows, err := e.conn.Query(context.Background(), fmt.Sprintf("SELECT %s, %s, %s, %s FROM %s.%s FINAL WHERE %s = '' AND has(%s, ?)",
			schemas.ColID, schemas.ColAlertCount, schemas.ColEntities, schemas.ColDecisionIDs, e.db, schemas.TableIncidents,
			schemas.ColMergedInto, schemas.ColEntities), incident.KindIP+":198.51.100.7")
		if err != nil {
			t.Fatal(err)
		}
		incs = incs[:0]
		for rows.Next() {
			var r incRow
			if err := rows.Scan(&r.id, &r.alerts, &r.entities, &r.decisions); err != nil {
				t.Fatal(err)
			}
			incs = append(incs, r)
		}
		rows.Close()
		if len(incs) == 1 && slices.Contains(incs[0].decisions, blockID) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(incs) != 1 || !slices.Contains(incs[0].decisions, blockID) {
		t.Fatalf("live incidents naming 198.51.100.7: %+v; want one, with the block %s", incs, blockID)
	}
	var withIP uint64
	e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE %s = ?", e.db, schemas.TableAlerts, schemas.ColClientIP),
		"198.51.100.7").Scan(&withIP)
	if withIP == 0 || uint64(incs[0].alerts) < withIP {
		t.Errorf("the incident holds %d alerts; %d alerts came from the address", incs[0].alerts, withIP)
	}
	t.Logf("incident %s: %d alerts (%d from the address), entities %v, decisions %v", incs[0].id, incs[0].alerts, withIP, incs[0].entities, incs[0].decisions)
	kv, err := e.js.KeyValue(context.Background(), schemas.KVActiveBlocks)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), schemas.KVKey(schemas.ScopeIP, "198.51.100.7"))
	if err != nil {
		t.Fatalf("no active block of 198.51.100.7 in KV: %v", err)
	}
	var d schemas.Decision
	if err := json.Unmarshal(entry.Value(), &d); err != nil || d.Action != schemas.ActionBlock || d.Device != "" {
		t.Errorf("KV decision = %s (%v)", entry.Value(), err)
	}
	var metrics strings.Builder
	p.WriteMetrics(&metrics)
	for _, m := range []string{schemas.MetricStateEntities, schemas.MetricFreshBlocksCapped} {
		if !strings.Contains(metrics.String(), m+" ") {
			t.Errorf("metrics lack %s", m)
		}
	}
	if p.M.Entities.Load() < 31 {
		t.Errorf("%d entities, want the 31 addresses and their prefixes", p.M.Entities.Load())
	}
}

// TestBackendIncidentNoEntityAlert: for five minutes a third of 200 devices'
// calls to one route get 503, every device from its usual address: no
// alert (device or entity), no entity decision.
func TestBackendIncidentNoEntityAlert(t *testing.T) {
	e := setup(t, "entity_incident")
	var lines []string
	for i := range 40 {
		for d := range 200 {
			status := 200
			if i >= 30 && i < 35 && (i*200+d)%10 < 3 {
				status = 503
			}
			lines = append(lines, entityLine(fmt.Sprintf("lock-%d", d), fmt.Sprintf("10.%d.%d.7", d/100, d%100), "/v1/devices/x/state",
				time.Duration(i)*time.Minute+time.Duration(d)*100*time.Millisecond, status, "ok"))
		}
	}
	publishLines(t, e, lines)
	e.run(t, pipeline.Config{Workers: 2, FlushInterval: 50 * time.Millisecond})
	if got := e.count(t, schemas.TableScored); got != uint64(len(lines)) {
		t.Fatalf("ClickHouse holds %d scored rows, want %d", got, len(lines))
	}
	if alerts := entityAlerts(t, e); len(alerts) != 0 {
		t.Errorf("a backend incident raised %d entity alerts: %+v", len(alerts), alerts)
	}
	// Nor a device alert: every device fails at once from its usual
	// address, which is the backend's incident, not the devices'.
	if n := e.count(t, schemas.TableAlerts); n != 0 {
		t.Errorf("a backend incident raised %d alerts in all (devices and entities)", n)
	}
	var n uint64
	e.conn.QueryRow(context.Background(), fmt.Sprintf("SELECT count() FROM %s.%s FINAL WHERE %s IN ('ip', 'cidr')",
		e.db, schemas.TableDecisions, schemas.ColScope)).Scan(&n)
	if n != 0 {
		t.Errorf("%d ip or cidr decisions on a backend incident", n)
	}
}
