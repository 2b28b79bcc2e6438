package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/apache/arrow-go/v18/arrow"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClickHouseConfig configures the ClickHouse writer.
type ClickHouseConfig struct {
	// DSN is a clickhouse-go DSN over the native protocol, such as
	// "clickhouse://user:password@host:9000/default?dial_timeout=5s". The HTTP
	// transport does not work with ClickHouse 18.16.
	DSN string
	// Database holds the tables. Default "iotwatch".
	Database string
	// MaxRetries bounds the attempts of one write after the first. Zero (the
	// default) retries until the context is done: a blocked write is the
	// pipeline's back-pressure, and nothing is dropped.
	MaxRetries int
	// RetryBackoff is the wait after the first failed attempt; it doubles after
	// each further failure, capped at 10s. Default 100ms.
	RetryBackoff time.Duration
	// DDL tunes the tables Migrate creates (retention, where the server has TTL).
	DDL schemas.DDLOptions
	// Log receives rate-limited warnings about failed attempts. Default slog.Default().
	Log *slog.Logger
}

// Defaults of ClickHouseConfig and of connection options the DSN leaves unset.
const (
	DefaultDatabase     = "iotwatch"
	defaultRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff     = 10 * time.Second
	defaultDialTimeout  = 5 * time.Second
	defaultReadTimeout  = 60 * time.Second
	// warnEvery rate-limits the warnings about failed attempts.
	warnEvery = 5 * time.Second
)

// ClickHouse writes scored events, alerts and decisions to ClickHouse with
// batched, column-wise inserts over the native protocol. Its methods are safe
// for concurrent use.
//
// Writes are idempotent: the tables are ReplacingMergeTree keyed by each row's
// stable id, so a batch written twice (a retry after a lost acknowledgement, a
// redelivered message) is counted once by queries that use FINAL.
type ClickHouse struct {
	conn    driver.Conn
	db      string
	dsn     string // without password, for messages
	version string
	cfg     ClickHouseConfig
	log     *slog.Logger

	rowsWritten atomic.Uint64
	retries     atomic.Uint64

	warnMu         sync.Mutex
	lastWarn       time.Time
	suppressedWarn int
}

// OpenClickHouse connects to the server named by cfg.DSN, checks that it answers
// and reads its version. It does not create any table: see Migrate.
func OpenClickHouse(ctx context.Context, cfg ClickHouseConfig) (*ClickHouse, error) {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.RetryBackoff <= 0 {
		cfg.RetryBackoff = defaultRetryBackoff
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	dsn := redactDSN(cfg.DSN)
	opts, err := clickhouse.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("cannot parse ClickHouse DSN %q: %w", dsn, err)
	}
	if opts.Protocol != clickhouse.Native {
		return nil, fmt.Errorf("cannot use ClickHouse DSN %q: only the native protocol is supported (clickhouse://host:9000)", dsn)
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = defaultReadTimeout
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("cannot open ClickHouse %q: %w", dsn, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot connect to ClickHouse %q: %w", dsn, err)
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot read the version of ClickHouse %q: %w", dsn, err)
	}
	return &ClickHouse{conn: conn, db: cfg.Database, dsn: dsn, version: version, cfg: cfg, log: cfg.Log}, nil
}

// redactDSN returns dsn without its password.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

// Version returns the server's version, as SELECT version() reported it.
func (c *ClickHouse) Version() string { return c.version }

// Database returns the database holding the tables.
func (c *ClickHouse) Database() string { return c.db }

// Migrate creates the database and the tables if they do not exist, with the
// DDL suited to the server's version (schemas.DDL). It never alters an existing table.
func (c *ClickHouse) Migrate(ctx context.Context) error {
	for _, stmt := range schemas.DDL(c.version, c.db, c.cfg.DDL) {
		if err := c.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("cannot migrate ClickHouse %q (server %s): %w\nstatement: %s", c.dsn, c.version, err, stmt)
		}
	}
	return nil
}

// ClickHouseStats are the writer's counters since it was opened.
type ClickHouseStats struct {
	RowsWritten uint64 // rows of successful inserts (schemas.MetricRowsWritten)
	Retries     uint64 // failed attempts that were retried
}

// Stats returns the writer's counters.
func (c *ClickHouse) Stats() ClickHouseStats {
	return ClickHouseStats{RowsWritten: c.rowsWritten.Load(), Retries: c.retries.Load()}
}

// Close closes the connections.
func (c *ClickHouse) Close() error { return c.conn.Close() }

// Ping checks that the server answers, for readiness probes.
func (c *ClickHouse) Ping(ctx context.Context) error {
	if err := c.conn.Ping(ctx); err != nil {
		return fmt.Errorf("cannot ping ClickHouse at %q: %w", c.dsn, err)
	}
	return nil
}

// WriteScored inserts the scored events of rec (schema schemas.ScoredArrowSchema,
// or any record whose fields are named and typed like the scored_events columns)
// into the scored events table. It does not retain or release rec.
//
// It retries failed attempts with back-off and returns only once the rows are
// written, when ctx is done (the error then wraps ctx.Err() and the caller still
// holds the whole batch), after MaxRetries retries, or when rec does not fit the
// table (a permanent error, returned at once).
func (c *ClickHouse) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	rows := int(rec.NumRows())
	if rows == 0 {
		return nil
	}
	table := schemas.ScoredTable()
	cols, err := arrowColumns(table, rec)
	if err != nil {
		return err
	}
	return c.insert(ctx, table, rows, func(b driver.Batch) error {
		for i, col := range cols {
			if err := col(b.Column(i)); err != nil {
				return fmt.Errorf("cannot append column %q: %w", table.Columns[i].Name, err)
			}
		}
		return nil
	})
}

// WriteAlerts inserts alerts into the alerts table, retrying like WriteScored.
func (c *ClickHouse) WriteAlerts(ctx context.Context, alerts []schemas.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	table := schemas.AlertsTable()
	cols := alertColumns(alerts)
	return c.insert(ctx, table, len(alerts), appendAll(table, cols))
}

// WriteDecisions inserts decisions into the decisions table, retrying like WriteScored.
func (c *ClickHouse) WriteDecisions(ctx context.Context, ds []schemas.Decision) error {
	if len(ds) == 0 {
		return nil
	}
	table := schemas.DecisionsTable()
	cols := decisionColumns(ds)
	return c.insert(ctx, table, len(ds), appendAll(table, cols))
}

// permanentError marks a failure that retrying cannot fix (the data does not
// fit the table).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// insert runs attempts of one INSERT until one succeeds, ctx is done, the
// retries are exhausted or the error is permanent. fill appends every column
// of the batch; it may be called once per attempt.
func (c *ClickHouse) insert(ctx context.Context, table *schemas.Table, rows int, fill func(driver.Batch) error) error {
	query := table.InsertStatement(c.db)
	backoff := c.cfg.RetryBackoff
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for attempt := 1; ; attempt++ {
		err := c.insertOnce(ctx, query, fill)
		if err == nil {
			c.rowsWritten.Add(uint64(rows))
			if attempt > 1 {
				c.log.Info("ClickHouse insert succeeded after retries", "table", table.Name, "rows", rows, "attempts", attempt)
			}
			return nil
		}
		if perm := (*permanentError)(nil); errors.As(err, &perm) {
			return fmt.Errorf("cannot write %d rows to ClickHouse table %q: %w", rows, table.Name, perm.err)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("cannot write %d rows to ClickHouse table %q after %d attempts: %w (last error: %v)", rows, table.Name, attempt, ctxErr, err)
		}
		if c.cfg.MaxRetries > 0 && attempt > c.cfg.MaxRetries {
			return fmt.Errorf("cannot write %d rows to ClickHouse table %q after %d attempts: %w", rows, table.Name, attempt, err)
		}
		c.retries.Add(1)
		c.warnFailure(table.Name, rows, attempt, backoff, err)
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot write %d rows to ClickHouse table %q after %d attempts: %w (last error: %v)", rows, table.Name, attempt, ctx.Err(), err)
		case <-timer.C:
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// insertOnce makes one attempt: prepare the INSERT, append the columns, send.
func (c *ClickHouse) insertOnce(ctx context.Context, query string, fill func(driver.Batch) error) error {
	b, err := c.conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := fill(b); err != nil {
		return &permanentError{err}
	}
	return b.Send()
}

// warnFailure logs a failed attempt, at most once per warnEvery; the warnings in
// between are counted in the next one.
func (c *ClickHouse) warnFailure(table string, rows, attempt int, backoff time.Duration, err error) {
	c.warnMu.Lock()
	now := time.Now()
	if now.Sub(c.lastWarn) < warnEvery {
		c.suppressedWarn++
		c.warnMu.Unlock()
		return
	}
	suppressed := c.suppressedWarn
	c.lastWarn, c.suppressedWarn = now, 0
	c.warnMu.Unlock()
	c.log.Warn("cannot write to ClickHouse, retrying", "dsn", c.dsn, "table", table, "rows", rows,
		"attempt", attempt, "backoff", backoff, "suppressed_warnings", suppressed, "err", err)
}
