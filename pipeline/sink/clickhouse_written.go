package sink

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/schemas"
)

// writtenMargin widens the event-time bounds of a Written lookup: rows
// store whole seconds.
const writtenMargin = time.Minute

// Written returns which results of events (ids with event times within
// [from, to], Unix nanoseconds) are stored (pipeline.WrittenReader): the ids
// of those with a scored row, the ids of the alerts they raised
// (last_event_id among them), and the ids of the decisions taken on those
// alerts. A partition's new owner asks it before it judges again what the
// previous owner may have written. Three queries, bounded by the events'
// days (the tables' partitions); the caller bounds the ids of one call.
func (c *ClickHouse) Written(ctx context.Context, events []uint64, from, to int64) (pipeline.Written, error) {
	var got pipeline.Written
	if len(events) == 0 {
		return got, nil
	}
	var ids strings.Builder
	for i, id := range events {
		if i > 0 {
			ids.WriteByte(',')
		}
		ids.WriteString(strconv.FormatUint(id, 10))
	}
	lo := clampDateTime(time.Unix(0, from).Add(-writtenMargin).Unix())
	hi := clampDateTime(time.Unix(0, to).Add(writtenMargin).Unix())
	inTime := fmt.Sprintf("%s >= toDateTime(%d) AND %s <= toDateTime(%d)", schemas.QuoteIdent(schemas.ColTime), lo, schemas.QuoteIdent(schemas.ColTime), hi)
	q := fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE %s AND %s IN (%s)", schemas.QuoteIdent(schemas.ColEventID),
		c.table(schemas.TableScored), inTime, schemas.QuoteIdent(schemas.ColEventID), ids.String())
	if err := queryRows(ctx, c.conn, q, func(scan func(...any) error) error {
		var id uint64
		if err := scan(&id); err != nil {
			return err
		}
		got.Events = append(got.Events, id)
		return nil
	}); err != nil {
		return got, fmt.Errorf("cannot read which events are stored: %w", err)
	}
	q = fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE %s AND %s IN (%s)", schemas.QuoteIdent(schemas.ColID),
		c.table(schemas.TableAlerts), inTime, schemas.QuoteIdent(schemas.ColLastEventID), ids.String())
	var err error
	if got.Alerts, err = queryStrings(ctx, c.conn, q); err != nil {
		return got, fmt.Errorf("cannot read which alerts are stored: %w", err)
	}
	if len(got.Alerts) == 0 {
		return got, nil
	}
	quoted := make([]string, len(got.Alerts))
	for i, id := range got.Alerts {
		quoted[i] = schemas.QuoteString(id)
	}
	q = fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE %s IN (%s)", schemas.QuoteIdent(schemas.ColID),
		c.table(schemas.TableDecisions), schemas.QuoteIdent(schemas.ColAlertID), strings.Join(quoted, ","))
	if got.Decisions, err = queryStrings(ctx, c.conn, q); err != nil {
		return got, fmt.Errorf("cannot read which decisions are stored: %w", err)
	}
	return got, nil
}

// table is the quoted name of one of the database's tables.
func (c *ClickHouse) table(name string) string {
	return schemas.QuoteIdent(c.db) + "." + schemas.QuoteIdent(name)
}

// queryRows runs query and calls fn with each row's Scan.
func queryRows(ctx context.Context, conn driver.Conn, query string, fn func(scan func(...any) error) error) error {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
