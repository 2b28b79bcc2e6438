package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/incident"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestIncidentsReachClickHouseAndNATS: four meters behind one address flood
// at once; their alerts (on every meter that alerted) make one incident, stored in ClickHouse (one row
// after FINAL, at its highest version, naming the four devices and the IP)
// and published on iotwatch.incidents.<severity>, its last message the same
// version; every message is acked only after that. Redelivered from the
// start to a fresh pipeline (one worker: the same alerts in the same order),
// the same incident comes out: still one row at the same version in
// ClickHouse, no new message on NATS (same id and version: deduplicated).
func TestIncidentsReachClickHouseAndNATS(t *testing.T) {
	e := setup(t, "incidents")
	ctx := context.Background()
	subject := bus.LogSubject(schemas.FormatJSON, "test")
	var lines []string
	for i := range 120 {
		for d := range 12 {
			lines = append(lines, line(fmt.Sprintf("meter-%d", d), time.Duration(i)*time.Minute+time.Duration(d)*time.Second, ""))
		}
	}
	flooders := []string{"meter-2", "meter-5", "meter-7", "meter-9"}
	for i := range 300 {
		for _, d := range flooders {
			lines = append(lines, line(d, 120*time.Minute+time.Duration(i)*200*time.Millisecond, ""))
		}
	}
	msgs := 0
	for i := 0; i < len(lines); i += 50 {
		data := strings.Join(lines[i:min(i+50, len(lines))], "\n")
		if _, err := e.js.Publish(ctx, subject, []byte(data), jetstream.WithMsgID(fmt.Sprint("m-", i))); err != nil {
			t.Fatal(err)
		}
		msgs++
	}
	p := e.run(t, pipeline.Config{Workers: 1, FlushInterval: 50 * time.Millisecond})
	if got := p.M.Acked.Load(); got != uint64(msgs) {
		t.Errorf("acked %d messages, want %d", got, msgs)
	}
	// The devices' alerts; the address's entity alert joins no incident
	// (see the collector).
	var alerts, alerted uint64
	q0 := fmt.Sprintf("SELECT count(), uniqExact(%s) FROM %s.%s FINAL WHERE %s = ''", schemas.ColDevice, e.db, schemas.TableAlerts, schemas.ColEntityKind)
	if err := e.conn.QueryRow(ctx, q0).Scan(&alerts, &alerted); err != nil {
		t.Fatal(err)
	}
	if alerted < 2 {
		t.Fatalf("alerts on %d devices (%d alerts), want several flooding meters", alerted, alerts)
	}

	// ClickHouse: one incident, at the version that folded every alert.
	if n := e.count(t, schemas.TableIncidents); n != 1 {
		t.Fatalf("ClickHouse holds %d incidents, want 1 (alerts: %d)", n, alerts)
	}
	var (
		id, sev          string
		version          uint64
		nAlerts, devices uint32
		sample, entities []string
	)
	q := fmt.Sprintf("SELECT %s, %s, %s, %s, %s, %s, %s FROM %s.%s FINAL", schemas.ColID, schemas.ColVersion, schemas.ColSeverity,
		schemas.ColAlertCount, schemas.ColDeviceCount, schemas.ColDeviceSample, schemas.ColEntities, e.db, schemas.TableIncidents)
	if err := e.conn.QueryRow(ctx, q).Scan(&id, &version, &sev, &nAlerts, &devices, &sample, &entities); err != nil {
		t.Fatal(err)
	}
	if uint64(nAlerts) != alerts || version != alerts || uint64(devices) != alerted {
		t.Errorf("incident %s: version %d, %d alerts, %d devices (%v); want %d, %d, %d", id, version, nAlerts, devices, sample, alerts, alerts, alerted)
	}
	if !strings.HasPrefix(id, incident.ID("")) || !containsAll(entities, "ip:203.0.113.9", "prefix:203.0.113.0/24") {
		t.Errorf("incident %s: entities %v, want the shared IP and its /24", id, entities)
	}

	// NATS: the stream holds the incident's updates; the last is the stored version.
	st, err := e.js.Stream(ctx, schemas.StreamIncidents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		t.Fatal("no incident published on NATS")
	}
	m, err := st.GetLastMsgForSubject(ctx, schemas.SubjectIncidentsPrefix+"."+sev)
	if err != nil {
		t.Fatalf("no incident on %s.%s: %v", schemas.SubjectIncidentsPrefix, sev, err)
	}
	var inc schemas.Incident
	if err := json.Unmarshal(m.Data, &inc); err != nil {
		t.Fatal(err)
	}
	if inc.ID != id || inc.Version != version || uint64(inc.Devices) != alerted {
		t.Errorf("last published incident %s v%d with %d devices; ClickHouse has %s v%d", inc.ID, inc.Version, inc.Devices, id, version)
	}
	if p.M.IncidentsOpened.Load() != 1 || p.M.IncidentUpdates.Load() != info.State.Msgs {
		t.Errorf("metrics: %d opened, %d updates published; stream holds %d", p.M.IncidentsOpened.Load(), p.M.IncidentUpdates.Load(), info.State.Msgs)
	}

	// Redelivery: rewind the consumer; a fresh pipeline judges everything again.
	logs, err := e.js.Stream(ctx, schemas.StreamLogs)
	if err != nil {
		t.Fatal(err)
	}
	if err := logs.DeleteConsumer(ctx, schemas.ConsumerPipeline); err != nil {
		t.Fatal(err)
	}
	if e.cons, _, err = bus.Ensure(ctx, e.js, bus.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	p2 := e.run(t, pipeline.Config{Workers: 1, FlushInterval: 50 * time.Millisecond})
	if p2.M.IncidentUpdates.Load() == 0 {
		t.Fatal("the redelivered run published no incident update: it checks nothing")
	}
	var id2 string
	var version2 uint64
	if n := e.count(t, schemas.TableIncidents); n != 1 {
		t.Errorf("after a redelivery ClickHouse holds %d incidents, want 1", n)
	}
	q2 := fmt.Sprintf("SELECT %s, %s FROM %s.%s FINAL", schemas.ColID, schemas.ColVersion, e.db, schemas.TableIncidents)
	if err := e.conn.QueryRow(ctx, q2).Scan(&id2, &version2); err != nil || id2 != id || version2 != version {
		t.Errorf("after a redelivery: incident %s v%d (%v), want %s v%d", id2, version2, err, id, version)
	}
	if info2, err := st.Info(ctx); err != nil || info2.State.Msgs != info.State.Msgs {
		t.Errorf("after a redelivery the incidents stream holds %d messages (%v), want %d", info2.State.Msgs, err, info.State.Msgs)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
