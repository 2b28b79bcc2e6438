package score_test

import (
	"strings"
	"testing"
	"time"

	_ "github.com/iotwatch/iotwatch/detectors/all"
	"github.com/iotwatch/iotwatch/pipeline/decide"
	"github.com/iotwatch/iotwatch/pipeline/score"
	"github.com/iotwatch/iotwatch/pipeline/worker"
	"github.com/iotwatch/iotwatch/schemas"
)

// The workers share the class table and the limiter, each has its own state;
// Reset replaces workers and class table but keeps layout and limiter.
func TestStackSharesClassTableAndLimiter(t *testing.T) {
	st, err := score.New(score.Config{Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Workers) != 3 {
		t.Fatalf("workers: %d, want 3", len(st.Workers))
	}
	want, err := worker.NewLayout(nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Layout.Version != want.Version || st.Layout.Size != want.Size {
		t.Errorf("layout %d bytes, version %d; want the layout of all detectors, %d bytes, version %d",
			st.Layout.Size, st.Layout.Version, want.Size, want.Version)
	}
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	ev.SetClass([]byte("meter/x"))
	ev.SetRawCommand(nil, []byte("POST /v1/readings"))
	ev.Time = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC).UnixNano()
	var sc schemas.Scored
	st.Workers[0].Process(&ev, &sc)
	if st.Workers[0].Table().Len() != 1 || st.Workers[1].Table().Len() != 0 {
		t.Errorf("records: worker 0 %d, worker 1 %d; want 1 and 0", st.Workers[0].Table().Len(), st.Workers[1].Table().Len())
	}

	layout, limiter, fleet := st.Layout, st.Limiter, st.Model
	if err := st.Reset(); err != nil {
		t.Fatal(err)
	}
	if st.Layout != layout || st.Limiter != limiter {
		t.Error("Reset replaced the layout or the limiter")
	}
	if st.Model == fleet || len(st.Workers) != 3 || st.Workers[0].Table().Len() != 0 {
		t.Errorf("after Reset: new class table %v, %d workers, %d records in worker 0; want a new table, 3 workers, 0 records",
			st.Model != fleet, len(st.Workers), st.Workers[0].Table().Len())
	}
}

func TestStackConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  score.Config
		want string
	}{
		{score.Config{Detectors: []string{"no_such_detector"}}, `"no_such_detector"`},
		{score.Config{Decide: decide.Config{AlertThreshold: 0.9, BlockThreshold: 0.5}}, "block_threshold"},
		{score.Config{Worker: worker.Config{MaxDevices: -1}}, "MaxDevices"},
	} {
		_, err := score.New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): error %v, want one naming %s", tc.cfg, err, tc.want)
		}
	}
}

// Without GeoIP, Enrich leaves the event alone.
func TestEnrichWithoutGeoIP(t *testing.T) {
	st, err := score.New(score.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var ev schemas.Event
	ev.Country = schemas.Country{'D', 'E'}
	st.Enrich(&ev)
	if ev.Country.String() != "DE" || ev.ASN != 0 {
		t.Errorf("event after Enrich: %q ASN %d; want DE, 0", ev.Country, ev.ASN)
	}
}
