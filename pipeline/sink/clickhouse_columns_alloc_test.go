package sink

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// rowColumn is a driver.BatchColumn that keeps what it is given.
type rowColumn struct{ rows []any }

func (c *rowColumn) Append(v any) error    { c.rows = append(c.rows, v); return nil }
func (c *rowColumn) AppendRow(v any) error { c.rows = append(c.rows, v); return nil }

// TestArrowListColumns: the scored table's list columns (findings) of a
// batch where most events have none are appended row by row with the
// findings' values, an empty slice for an event without, and without an
// allocation per row (a shared empty slice, not each row's boxed).
func TestArrowListColumns(t *testing.T) {
	b := schemas.NewScoredBatch(nil)
	defer b.Release()
	var ev schemas.Event
	ev.SetDevice([]byte("acme"), []byte("d-1"))
	const n = 1000
	for i := range n {
		var sc schemas.Scored
		if i%100 == 7 {
			sc.Add(schemas.Finding{Detector: "volume", Reason: "rate_spike", Score: 0.75, Observed: float64(i), Expected: 2})
		}
		b.Append(&ev, &sc)
	}
	rec := b.NewRecord()
	defer rec.Release()
	table := schemas.ScoredTable()
	cols, err := arrowColumns(table, rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	lists := 0
	for i, c := range table.Columns {
		if len(c.Type) < 6 || c.Type[:6] != "Array(" {
			continue
		}
		lists++
		col := &rowColumn{}
		if err := cols[i](col, 0, n); err != nil {
			t.Fatal(err)
		}
		if len(col.rows) != n {
			t.Fatalf("column %q: %d rows appended, want %d", c.Name, len(col.rows), n)
		}
		for r, v := range col.rows {
			want := 0
			if r%100 == 7 {
				want = 1
			}
			if got := reflect.ValueOf(v); got.Kind() != reflect.Slice || got.Len() != want {
				t.Fatalf("column %q row %d: appended %v", c.Name, r, v)
			}
			if r == 107 && c.Name == schemas.ColObserved && fmt.Sprint(v) != "[107]" {
				t.Fatalf("column %q row %d: appended %v, want [107]", c.Name, r, v)
			}
		}
		col.rows = make([]any, 0, n)
		allocs := testing.AllocsPerRun(10, func() {
			col.rows = col.rows[:0]
			if err := cols[i](col, 0, n); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > n/50 {
			t.Errorf("column %q: %.0f allocations for %d rows (%d with findings)", c.Name, allocs, n, n/100)
		}
	}
	if lists == 0 {
		t.Fatal("the scored table has no list column")
	}
}
