package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/iotwatch/iotwatch/schemas"
)

// dayGroups leaves rows of few days alone, and otherwise groups every row
// once into ceil(days/maxDays) groups of at most maxDays days each, whatever
// the rows' order, each group in row order.
func TestDayGroups(t *testing.T) {
	f := func(name string, days []int64, maxDays int, want string) {
		t.Helper()
		got := dayGroups(len(days), maxDays, func(i int) int64 { return days[i] })
		if want != "" && fmt.Sprint(got) != want {
			t.Errorf("%s: groups %v, want %s", name, got, want)
		}
		distinct := map[int64]bool{}
		for _, d := range days {
			distinct[d] = true
		}
		if got == nil {
			if len(distinct) > maxDays {
				t.Errorf("%s: one insert of %d days, want at most %d", name, len(distinct), maxDays)
			}
			return
		}
		if wantGroups := (len(distinct) + maxDays - 1) / maxDays; len(got) != wantGroups {
			t.Errorf("%s: %d groups, want %d", name, len(got), wantGroups)
		}
		seen := make([]int, len(days))
		for _, rows := range got {
			groupDays := map[int64]bool{}
			for k, r := range rows {
				seen[r]++
				groupDays[days[r]] = true
				if k > 0 && rows[k-1] >= r {
					t.Errorf("%s: group %v is not in row order", name, rows)
				}
			}
			if len(groupDays) > maxDays || len(rows) == 0 {
				t.Errorf("%s: a group of %d rows holds %d days, want 1..%d", name, len(rows), len(groupDays), maxDays)
			}
		}
		for r, n := range seen {
			if n != 1 {
				t.Errorf("%s: row %d is in %d groups, want 1", name, r, n)
			}
		}
	}
	f("none", nil, 2, "[]")
	f("one day", []int64{5, 5, 5}, 2, "[]")
	f("two days, back and forth", []int64{5, 6, 5, 6}, 2, "[]")
	f("three days", []int64{7, 5, 6}, 2, "[[1 2] [0]]")
	f("days come back", []int64{1, 3, 2, 1, 3, 3}, 2, "[[0 2 3] [1 4 5]]")
	f("max 1", []int64{2, 1, 2, 1, 3}, 1, "[[1 3] [0 2] [4]]")
	many := make([]int64, 3*1003)
	for i := range many {
		many[i] = int64(-(i % 1003)) // a message spanning 1,003 days, its days interleaved
	}
	f("1,003 days interleaved", many, MaxDaysPerInsert, "")
}

// Every table the writer fills is partitioned by day of the column
// dayRanges reads (Table.TimeColumn): MaxDaysPerInsert relies on it.
func TestTablesPartitionedByTimeColumnDay(t *testing.T) {
	for _, table := range []*schemas.Table{schemas.ScoredTable(), schemas.AlertsTable(), schemas.DecisionsTable(), schemas.ReceiptsTable()} {
		if want := "toYYYYMMDD(" + schemas.QuoteIdent(table.TimeColumn) + ")"; table.PartitionBy != want {
			t.Errorf("table %q is partitioned by %s; the writer splits inserts by %s", table.Name, table.PartitionBy, want)
		}
	}
}

// TestClickHouseManyPartitions: rows of one write spanning 101 days, their
// days interleaved (issue 13: one message spanning 1,000 days made 1,003
// partitions in one insert, which current servers refuse beyond
// max_partitions_per_insert_block = 100), reach the real server in inserts of
// at most MaxDaysPerInsert days each, every row exactly once. ClickHouse 18.16
// has no max_partitions_per_insert_block to set, so the test counts the
// inserts (ceil(101/50) = 3: TestDayGroups shows each holds at most 50 days,
// with 1,003 days too) and the rows: as many as written without FINAL (no
// insert was repeated), one partition per day. (101 days, more than one
// insert may touch, not 1,003: 18.16 writes about 8 partitions a second on
// this machine.)
func TestClickHouseManyPartitions(t *testing.T) {
	srv := testClickHouse(t)
	c := openTestWriter(t, srv, ClickHouseConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang bound
	defer cancel()
	const days, perDay = 101, 2
	wantInserts := uint64((days + MaxDaysPerInsert - 1) / MaxDaysPerInsert)

	b := schemas.NewScoredBatch(memory.DefaultAllocator)
	defer b.Release()
	var ev schemas.Event
	var s schemas.Scored
	for i := range days * perDay {
		fillTestEvent(&ev, &s, i)
		ev.Time = testBase.AddDate(0, 0, -(i % days)).UnixNano() // days interleaved, as in one message
		b.Append(&ev, &s)
	}
	rec := b.NewRecord()
	defer rec.Release()
	before := c.Stats().Inserts
	if err := c.WriteScored(ctx, rec); err != nil {
		t.Fatalf("cannot write rows of %d days: %v", days, err)
	}
	if got := c.Stats().Inserts - before; got != wantInserts {
		t.Errorf("%d inserts for %d days; want %d of at most %d days", got, days, wantInserts, MaxDaysPerInsert)
	}
	q := func(query string) uint64 {
		t.Helper()
		var n uint64
		if err := c.conn.QueryRow(ctx, query).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		return n
	}
	table := schemas.QuoteIdent(c.db) + "." + schemas.QuoteIdent(schemas.TableScored)
	if n := q("SELECT count() FROM " + table); n != days*perDay {
		t.Errorf("%d rows stored (without FINAL); want each of %d once", n, days*perDay)
	}
	if n := q("SELECT uniqExact(event_id) FROM " + table); n != days*perDay {
		t.Errorf("%d distinct event ids; want %d", n, days*perDay)
	}
	if n := q(fmt.Sprintf("SELECT uniqExact(partition) FROM system.parts WHERE database = '%s' AND table = '%s' AND active", c.db, schemas.TableScored)); n != days {
		t.Errorf("%d partitions; want one per day, %d", n, days)
	}

	// Decisions go through the column-map path (alerts and receipts too).
	var ds []schemas.Decision
	for i := range 2 * 60 {
		d := testCHDecisions()[0]
		d.ID = fmt.Sprint("dc-", i)
		d.CreatedAt = d.CreatedAt.AddDate(0, 0, -(i % 60))
		ds = append(ds, d)
	}
	before = c.Stats().Inserts
	if err := c.WriteDecisions(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Stats().Inserts-before, uint64((60+MaxDaysPerInsert-1)/MaxDaysPerInsert); got != want {
		t.Errorf("%d inserts of decisions over 60 days; want %d", got, want)
	}
	if n := q("SELECT count() FROM " + schemas.QuoteIdent(c.db) + "." + schemas.QuoteIdent(schemas.TableDecisions)); n != uint64(len(ds)) {
		t.Errorf("%d decision rows; want %d", n, len(ds))
	}
}
