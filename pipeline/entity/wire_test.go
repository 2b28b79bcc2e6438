package entity_test

import (
	"net/netip"
	"testing"

	"github.com/iotwatch/iotwatch/pipeline/entity"
	"github.com/iotwatch/iotwatch/schemas"
)

// TestObsWireRoundTrip: an observation batch holds each observation as it
// was (address, positions, flags, key, tenant and class, the class's key
// hashed again from its text), and a batch of another version,
// record size or a torn length is refused.
func TestObsWireRoundTrip(t *testing.T) {
	ev := schemas.Event{ID: 77, Seq: 12, Line: 3, Time: 1_700_000_000_123, DeviceKey: 9, CommandID: 5, Status: 401,
		ClientIP: netip.MustParseAddr("198.51.100.7"), Tenant: []byte("acme"), APIKey: []byte("k-1234"),
		Class: []byte("camera/cx-200")}
	ev.ClassKey = schemas.Hash2(ev.Tenant, ev.Class) // what SetClass sets: the reader hashes it again
	a, ok := entity.ObsOf(&ev)
	if !ok {
		t.Fatal("no observation")
	}
	k, ok := entity.KeyObsOf(&ev)
	if !ok {
		t.Fatal("no key observation")
	}
	ev6 := ev
	ev6.ClientIP, ev6.IDMethod, ev6.Tenant = netip.MustParseAddr("2001:db8::1"), schemas.IDClientIP, nil
	ev6.ClassKey = schemas.Hash2(nil, ev6.Class)
	c, _ := entity.ObsOf(&ev6)
	if a.ClassLen == 0 || c.ClassLen == 0 || a.Class == c.Class {
		t.Fatalf("observations' classes %d %x, %d %x: want a class each, told apart by tenant", a.ClassLen, a.Class, c.ClassLen, c.Class)
	}
	want := []entity.Obs{a, k, c}
	batch := entity.AppendObsHeader(nil)
	for i := range want {
		batch = entity.AppendObs(batch, &want[i])
	}
	n, err := entity.ObsCount(batch)
	if err != nil || n != len(want) {
		t.Fatalf("ObsCount = %d, %v; want %d", n, err, len(want))
	}
	for i := range want {
		var got entity.Obs
		entity.ReadObs(batch, i, &got)
		if got != want[i] {
			t.Errorf("observation %d: got %+v, want %+v", i, got, want[i])
		}
		if entity.ObsPartition(&got, 8) != entity.ObsPartition(&want[i], 8) {
			t.Errorf("observation %d changed partition", i)
		}
	}
	for name, bad := range map[string][]byte{
		"short":   batch[:2],
		"torn":    batch[:len(batch)-1],
		"version": append([]byte{schemas.ObsBatchVersion + 1}, batch[1:]...),
		"size":    append([]byte{batch[0], 0, byte(schemas.ObsRecordSize - 1), 0}, batch[4:]...),
	} {
		if _, err := entity.ObsCount(bad); err == nil {
			t.Errorf("%s batch accepted", name)
		}
	}
}

// BenchmarkAppendObs is the ingest stage's cost per observation.
func BenchmarkAppendObs(b *testing.B) {
	ev := schemas.Event{ID: 77, Seq: 12, Line: 3, Time: 1_700_000_000_123, DeviceKey: 9, CommandID: 5, Status: 401,
		ClientIP: netip.MustParseAddr("198.51.100.7"), Tenant: []byte("acme")}
	batch := make([]byte, 0, schemas.ObsHeaderSize+schemas.ObsRecordSize*100)
	b.ReportAllocs()
	for b.Loop() {
		batch = entity.AppendObsHeader(batch[:0])
		ob, _ := entity.ObsOf(&ev)
		batch = entity.AppendObs(batch, &ob)
	}
}
