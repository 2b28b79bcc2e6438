package sink

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/iotwatch/iotwatch/schemas"
)

// MaxDaysPerInsert bounds the UTC days whose rows one INSERT carries. Every
// table is partitioned by day of its time column (toYYYYMMDD in the server's
// time zone, schemas.Table.TimeColumn), and a UTC day overlaps at most two
// days of any time zone, so an insert touches at most twice as many
// partitions: 100, the default of max_partitions_per_insert_block, beyond
// which current ClickHouse servers refuse the insert (18.16 has no such
// limit). A write whose rows span more days (a backfill, one message spanning
// years) is split into several inserts.
const MaxDaysPerInsert = 50

// secondsPerDay is the length of a UTC day in Unix seconds.
const secondsPerDay = int64(24 * time.Hour / time.Second)

// dayGroups groups rows 0..n-1 by day(i) for inserts of at most maxDays
// days each: nil when they hold maxDays days or fewer (one insert of every
// row); otherwise the rows of each insert, in their order, the days sorted and
// cut every maxDays (ceil(days/maxDays) inserts whatever the rows' order).
func dayGroups(n, maxDays int, day func(i int) int64) [][]int {
	few := make([]int64, 0, maxDays)
	for i := range n {
		d := day(i)
		if slices.Contains(few, d) {
			continue
		}
		if len(few) == maxDays {
			return groupRows(n, maxDays, day)
		}
		few = append(few, d)
	}
	return nil
}

// groupRows is dayGroups for rows of more than maxDays days.
func groupRows(n, maxDays int, day func(i int) int64) [][]int {
	group := make(map[int64]int)
	for i := range n {
		group[day(i)] = 0
	}
	days := slices.Sorted(maps.Keys(group))
	for rank, d := range days {
		group[d] = rank / maxDays
	}
	groups := make([][]int, (len(days)+maxDays-1)/maxDays)
	for i := range n {
		g := group[day(i)]
		groups[g] = append(groups[g], i)
	}
	return groups
}

// utcDay returns the UTC day of DateTime seconds.
func utcDay(sec int64) int64 { return floorDiv(sec, secondsPerDay) }

// scoredDayGroups returns dayGroups of rec's rows by the table's time column,
// or nil when rec has no such timestamp column (arrowColumns reports that).
func scoredDayGroups(table *schemas.Table, rec arrow.RecordBatch) [][]int {
	idx := rec.Schema().FieldIndices(table.TimeColumn)
	if len(idx) != 1 {
		return nil
	}
	a, ok := rec.Column(idx[0]).(*array.Timestamp)
	if !ok {
		return nil
	}
	div := int64(time.Second / a.DataType().(*arrow.TimestampType).Unit.Multiplier())
	vals := a.TimestampValues()
	return dayGroups(len(vals), MaxDaysPerInsert, func(i int) int64 {
		return utcDay(clampDateTime(floorDiv(int64(vals[i]), div)))
	})
}

// insertColumns inserts n rows given as column slices keyed by column name
// (appendAll), MaxDaysPerInsert days of the table's time column at most per
// INSERT, each insert retried like WriteScored's.
func (c *ClickHouse) insertColumns(ctx context.Context, table *schemas.Table, n int, cols map[string]any) error {
	times, ok := cols[table.TimeColumn].([]int64)
	if !ok {
		panic(fmt.Sprintf("BUG: table %q: time column %q is not DateTime seconds", table.Name, table.TimeColumn))
	}
	groups := dayGroups(n, MaxDaysPerInsert, func(i int) int64 { return utcDay(times[i]) })
	if groups == nil {
		return c.insert(ctx, table, n, appendAll(table, cols))
	}
	part := make(map[string]any, len(cols))
	for _, rows := range groups {
		for name, v := range cols {
			part[name] = gatherAny(v, rows)
		}
		if err := c.insert(ctx, table, len(rows), appendAll(table, part)); err != nil {
			return err
		}
	}
	return nil
}

// gatherAny returns slice[rows[0]], slice[rows[1]], ... for a slice of any
// element type.
func gatherAny(slice any, rows []int) any {
	v := reflect.ValueOf(slice)
	out := reflect.MakeSlice(v.Type(), len(rows), len(rows))
	for i, r := range rows {
		out.Index(i).Set(v.Index(r))
	}
	return out.Interface()
}
