package sink

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/iotwatch/iotwatch/schemas"
)

// valueColumn is a driver.BatchColumn that keeps the values it is given,
// one string per row, copied as clickhouse-go copies them (the slices
// appended may be reused for the next block).
type valueColumn struct{ vals []string }

func (c *valueColumn) Append(v any) error {
	rv := reflect.ValueOf(v)
	for k := range rv.Len() {
		c.vals = append(c.vals, fmt.Sprint(rv.Index(k).Interface()))
	}
	return nil
}

func (c *valueColumn) AppendRow(v any) error {
	c.vals = append(c.vals, fmt.Sprint(v))
	return nil
}

// blockBatch is a driver.Batch that keeps the values appended to each
// column and the rows of each block sent by Flush.
type blockBatch struct {
	driver.Batch
	cols   []*valueColumn
	blocks []int
	sent   int // rows of the blocks sent
}

func newBlockBatch(cols int) *blockBatch {
	b := &blockBatch{}
	for range cols {
		b.cols = append(b.cols, &valueColumn{})
	}
	return b
}

func (b *blockBatch) Column(i int) driver.BatchColumn { return b.cols[i] }

func (b *blockBatch) Flush() error {
	b.blocks = append(b.blocks, len(b.cols[0].vals)-b.sent)
	b.sent = len(b.cols[0].vals)
	return nil
}

// TestArrowBlocks: a record of more than InsertBlockRows rows is appended
// in blocks of at most that many, each sent before the next is appended
// (Flush), with every column's values those of the record's rows appended
// at once (one Append per column, as before blocks), whether or not rows
// are selected.
func TestArrowBlocks(t *testing.T) {
	n := 2*InsertBlockRows + 5
	rec := testRecord(t, n)
	defer rec.Release()
	table := schemas.ScoredTable()
	var odd []int // a selection, as WriteScored makes of rows of too many days
	for i := 1; i < n; i += 2 {
		odd = append(odd, i)
	}
	for _, sel := range [][]int{nil, odd} {
		name := "all"
		if sel != nil {
			name = "selected"
		}
		t.Run(name, func(t *testing.T) {
			rows := n
			if sel != nil {
				rows = len(sel)
			}
			cols, err := arrowColumns(table, rec, sel)
			if err != nil {
				t.Fatal(err)
			}
			b := newBlockBatch(len(cols))
			if err := fillBlocks(table, cols, rows)(b); err != nil {
				t.Fatal(err)
			}
			b.blocks = append(b.blocks, len(b.cols[0].vals)-b.sent) // the last block, which Send sends
			var want []int
			for left := rows; left > 0; left -= InsertBlockRows {
				want = append(want, min(left, InsertBlockRows))
			}
			if !reflect.DeepEqual(b.blocks, want) {
				t.Fatalf("blocks of %v rows, want %v", b.blocks, want)
			}
			whole := newBlockBatch(len(cols))
			for i, col := range cols {
				if err := col(whole.cols[i], 0, rows); err != nil {
					t.Fatal(err)
				}
			}
			for i, c := range table.Columns {
				got, want := b.cols[i].vals, whole.cols[i].vals
				if len(got) != rows || !reflect.DeepEqual(got, want) {
					t.Fatalf("column %q: %d values in blocks, %d appended at once, want %d alike", c.Name, len(got), len(want), rows)
				}
			}
		})
	}
}

// TestClickHouseBlocks: a record of several blocks is one INSERT whose
// rows all read back as written, and one part: the server squashes the
// blocks of an INSERT (min_insert_block_size_rows), so sending a flush in
// blocks does not multiply the parts ClickHouse has to merge.
func TestClickHouseBlocks(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	ctx := context.Background()
	n := 2*InsertBlockRows + 5
	rec := testRecord(t, n)
	defer rec.Release()
	before := c.Stats().Inserts
	if err := c.WriteScored(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got := c.Stats().Inserts - before; got != 1 {
		t.Errorf("%d inserts, want 1", got)
	}
	checkScoredRows(ctx, t, c, n)
	// Parts as inserted (level 0), merged ones included (inactive).
	var parts uint64
	q := fmt.Sprintf("SELECT count() FROM system.parts WHERE database = '%s' AND table = '%s' AND level = 0", c.db, schemas.TableScored)
	if err := c.conn.QueryRow(ctx, q).Scan(&parts); err != nil {
		t.Fatal(err)
	}
	if parts != 1 {
		t.Errorf("%d parts inserted for one INSERT of %d blocks, want 1", parts, (n+InsertBlockRows-1)/InsertBlockRows)
	}
}
