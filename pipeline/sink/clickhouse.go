package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
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
	// DDL tunes the tables Migrate creates (retention, where the server has
	// TTL; on a cluster, Replicated local tables and their ZooKeeper path).
	// Its Cluster and OnCluster fields are set from Cluster and ClusterDDL.
	DDL schemas.DDLOptions
	// Cluster, when set, names the ClickHouse cluster (the servers'
	// remote_servers) that holds the tables: each table is then a Distributed
	// table over local parts on every shard (see schemas.DDLOptions.Cluster),
	// Migrate creates them on every host (ClusterDDL says how), and every
	// insert goes through the Distributed table synchronously
	// (insert_distributed_sync = 1): it returns only once each shard it
	// touches has stored its rows. See ClickHouse.
	Cluster string
	// ClusterDDL says how Migrate applies the DDL on a cluster:
	// ClusterDDLAuto (the default), ClusterDDLOnCluster or ClusterDDLPerHost.
	ClusterDDL string
	// Log receives rate-limited warnings about failed attempts. Default slog.Default().
	Log *slog.Logger

	// Username, when set, replaces the DSN's user.
	Username string
	// Password, when set, replaces the DSN's password. It is the secret itself
	// (resolve "file:"/"env:" references with package secrets first); it never
	// appears in errors or logs.
	Password string
	// PasswordFile, when set, is read at open and its content (without trailing
	// CR/LF) is the password; it takes precedence over Password.
	PasswordFile string
	// TLS enables TLS on the native protocol (the server's tcp_port_secure,
	// usually 9440), verifying the server against the system's roots unless
	// CAFile is set. CAFile, CertFile and ServerName imply TLS.
	TLS bool
	// CAFile is a PEM bundle of the authorities the server's certificate must chain to.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key. Both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must hold; default the DSN's host.
	ServerName string
	// InsecureSkipVerify accepts any server certificate. For tests only: it makes
	// TLS worthless against an active attacker.
	InsecureSkipVerify bool
	// SettingName maps a CHSetting* key to the name an operator knows it by,
	// such as a flag, in errors; nil keeps the keys.
	SettingName func(key string) string
}

// Keys of the ClickHouse connection settings that errors name (see
// ClickHouseConfig.SettingName).
const (
	CHSettingDSN      = "clickhouse.dsn"
	CHSettingUser     = "clickhouse.user"
	CHSettingPassword = "clickhouse.password"
	CHSettingTLS      = "clickhouse.tls"
	CHSettingCA       = "clickhouse.ca"
	CHSettingCert     = "clickhouse.cert"
	CHSettingKey      = "clickhouse.key"
)

// settings returns the names of the given setting keys, joined for "check ...".
func (cfg ClickHouseConfig) settings(keys ...string) string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k
		if cfg.SettingName != nil {
			names[i] = cfg.SettingName(k)
		}
	}
	return strings.Join(names, "/")
}

// applySecurity sets the credentials and TLS of cfg on opts. Errors name the
// setting, never the password.
func (cfg ClickHouseConfig) applySecurity(opts *clickhouse.Options) error {
	if cfg.Username != "" {
		opts.Auth.Username = cfg.Username
	}
	if cfg.Password != "" {
		opts.Auth.Password = cfg.Password
	}
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return fmt.Errorf("cannot read the ClickHouse password file %q: %w: check %s", cfg.PasswordFile, unwrapPath(err), cfg.settings(CHSettingPassword))
		}
		opts.Auth.Password = strings.TrimRight(string(b), "\r\n")
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return err
	}
	if tc != nil {
		opts.TLS = tc
	}
	return nil
}

// tlsConfig builds the TLS configuration cfg asks for; nil means no TLS (or
// the DSN's own "secure=true" setting).
func (cfg ClickHouseConfig) tlsConfig() (*tls.Config, error) {
	if !cfg.TLS && cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" && cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read the ClickHouse CA file %q: %w: check %s", cfg.CAFile, unwrapPath(err), cfg.settings(CHSettingCA))
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cannot use the ClickHouse CA file %q: no PEM certificate in it: check %s", cfg.CAFile, cfg.settings(CHSettingCA))
		}
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, fmt.Errorf("cannot use a ClickHouse client certificate: it needs both a certificate and a key file: check %s", cfg.settings(CHSettingCert, CHSettingKey))
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot load the ClickHouse client certificate %q with key %q: %w: check %s", cfg.CertFile, cfg.KeyFile, unwrapPath(err), cfg.settings(CHSettingCert, CHSettingKey))
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// unwrapPath drops the *os.PathError wrapper whose path the caller already quotes.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ClickHouse server error codes that mean the credentials were refused.
const (
	chUnknownUser          = 192
	chWrongPassword        = 193
	chRequiredPassword     = 194
	chAuthenticationFailed = 516
)

// explainConnectError appends the settings to check to err when the server
// refused the credentials or TLS failed; other errors are returned unchanged.
func (cfg ClickHouseConfig) explainConnectError(err error) error {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		switch ex.Code {
		case chUnknownUser, chWrongPassword, chRequiredPassword, chAuthenticationFailed:
			return fmt.Errorf("%w: check %s", err, cfg.settings(CHSettingDSN, CHSettingUser, CHSettingPassword))
		}
		return err
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		verifyErr *tls.CertificateVerificationError
		recordErr tls.RecordHeaderError
	)
	switch msg := err.Error(); {
	case errors.As(err, &hostErr):
		return fmt.Errorf("TLS: %w: check %s", err, cfg.settings(CHSettingDSN, CHSettingCA))
	case errors.As(err, &unknownCA), errors.As(err, &verifyErr):
		return fmt.Errorf("TLS: %w: check %s", err, cfg.settings(CHSettingCA))
	case errors.As(err, &recordErr):
		return fmt.Errorf("TLS: %w (is this the server's TLS port?): check %s", err, cfg.settings(CHSettingDSN, CHSettingTLS))
	case strings.Contains(msg, "remote error: tls:"):
		return fmt.Errorf("TLS: %w: check %s", err, cfg.settings(CHSettingCert, CHSettingKey))
	case strings.Contains(msg, "tls: "):
		return fmt.Errorf("TLS: %w: check %s", err, cfg.settings(CHSettingTLS, CHSettingCA, CHSettingCert, CHSettingKey))
	}
	return err
}

// How Migrate applies the DDL on a cluster (ClickHouseConfig.ClusterDDL).
const (
	// ClusterDDLAuto is ClusterDDLOnCluster when the server has a ZooKeeper
	// (its system.zookeeper table exists) and distributed DDL (it does not
	// refuse ON CLUSTER for want of a distributed_ddl section), else
	// ClusterDDLPerHost.
	ClusterDDLAuto = "auto"
	// ClusterDDLOnCluster sends each statement once, with ON CLUSTER: the
	// server runs it on every host (distributed DDL: needs ZooKeeper and the
	// distributed_ddl section in every server's configuration).
	ClusterDDLOnCluster = "on-cluster"
	// ClusterDDLPerHost connects to each host of the cluster as
	// system.clusters lists it (host_name and port, with the same
	// credentials and TLS settings) and runs the statements there.
	ClusterDDLPerHost = "per-host"
)

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
// On a cluster (ClickHouseConfig.Cluster) it inserts into the Distributed
// tables with insert_distributed_sync = 1: the server that receives an insert
// splits the rows by shard (cityHash64 of the table's ShardKey: a device's
// events and alerts on one shard) and returns only once every shard's part is
// stored (on one replica of each shard when they are Replicated; the others
// copy it from there). So a write that returned holds the same promise as on
// one server, and the pipeline acks a log message only after it. A write that
// failed on one shard after another had stored its rows is retried whole: the
// rows written twice are on the same shard and collapse there.
//
// Writes are idempotent: the tables are ReplacingMergeTree keyed by each row's
// stable id, so a batch written twice (a retry after a lost acknowledgement, a
// redelivered message) is counted once by queries that use FINAL. One insert
// carries rows of at most MaxDaysPerInsert days, so that it touches at most
// 100 daily partitions (max_partitions_per_insert_block).
type ClickHouse struct {
	conn    driver.Conn
	opts    *clickhouse.Options // for connections to the other hosts of a cluster
	db      string
	dsn     string // without password, for messages
	version string
	cfg     ClickHouseConfig
	log     *slog.Logger

	rowsWritten atomic.Uint64
	inserts     atomic.Uint64
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
	if err := cfg.applySecurity(opts); err != nil {
		return nil, err
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = defaultReadTimeout
	}
	cfg.DDL.Cluster = cfg.Cluster
	if cfg.Cluster != "" {
		switch cfg.ClusterDDL {
		case "":
			cfg.ClusterDDL = ClusterDDLAuto
		case ClusterDDLAuto, ClusterDDLOnCluster, ClusterDDLPerHost:
		default:
			return nil, fmt.Errorf("cannot use cluster DDL mode %q: want %s, %s or %s", cfg.ClusterDDL, ClusterDDLAuto, ClusterDDLOnCluster, ClusterDDLPerHost)
		}
		if opts.Settings == nil {
			opts.Settings = clickhouse.Settings{}
		}
		if _, set := opts.Settings[settingInsertDistributedSync]; !set {
			opts.Settings[settingInsertDistributedSync] = 1
		}
	}
	conn, version, err := openConn(ctx, opts, dsn, cfg)
	if err != nil {
		return nil, err
	}
	c := &ClickHouse{conn: conn, opts: opts, db: cfg.Database, dsn: dsn, version: version, cfg: cfg, log: cfg.Log}
	if cfg.Cluster != "" {
		if _, err := c.clusterHosts(ctx); err != nil {
			conn.Close()
			return nil, err
		}
	}
	return c, nil
}

// settingInsertDistributedSync makes an INSERT into a Distributed table
// return only once every shard has stored its rows (ClickHouse 18.16 and
// later; renamed distributed_foreground_insert in 23.x, which keeps this
// name as an alias).
const settingInsertDistributedSync = "insert_distributed_sync"

// openConn connects with opts, checks that the server answers and reads its
// version. dsn names the server in errors.
func openConn(ctx context.Context, opts *clickhouse.Options, dsn string, cfg ClickHouseConfig) (driver.Conn, string, error) {
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, "", fmt.Errorf("cannot open ClickHouse %q: %w", dsn, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("cannot connect to ClickHouse %q: %w", dsn, cfg.explainConnectError(err))
	}
	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		conn.Close()
		return nil, "", fmt.Errorf("cannot read the version of ClickHouse %q: %w", dsn, err)
	}
	return conn, version, nil
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
// DDL suited to the server's version (schemas.DDL), then adds to existing
// tables the columns a later release introduced (schemas.Table.AddColumns).
// It never drops, renames or retypes anything.
//
// On a cluster (ClickHouseConfig.Cluster) it does so on every host: see
// MigrateCluster.
func (c *ClickHouse) Migrate(ctx context.Context) error {
	if c.cfg.Cluster != "" {
		_, err := c.MigrateCluster(ctx)
		return err
	}
	stmts := schemas.DDL(c.version, c.db, c.cfg.DDL)
	for _, stmt := range stmts {
		if err := c.conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("cannot migrate ClickHouse %q (server %s): %w\nstatement: %s", c.dsn, c.version, err, stmt)
		}
	}
	have, err := c.columns(ctx)
	if err != nil {
		return err
	}
	f := schemas.Features(c.version)
	for _, t := range schemas.Tables() {
		for _, stmt := range t.AddColumns(c.db, have[t.Name], f) {
			if err := c.conn.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("cannot migrate ClickHouse %q (server %s): %w\nstatement: %s", c.dsn, c.version, err, stmt)
			}
		}
	}
	return nil
}

// columns returns the column names of the database's tables, by table.
func (c *ClickHouse) columns(ctx context.Context) (map[string]map[string]bool, error) {
	return columnsOf(ctx, c.conn, c.db)
}

// columnsOf returns the column names of database db's tables on conn, by table.
func columnsOf(ctx context.Context, conn driver.Conn, db string) (map[string]map[string]bool, error) {
	rows, err := conn.Query(ctx, "SELECT table, name FROM system.columns WHERE database = ?", db)
	if err != nil {
		return nil, fmt.Errorf("cannot list the columns of database %q: %w", db, err)
	}
	defer rows.Close()
	have := map[string]map[string]bool{}
	for rows.Next() {
		var table, name string
		if err := rows.Scan(&table, &name); err != nil {
			return nil, fmt.Errorf("cannot list the columns of database %q: %w", db, err)
		}
		if have[table] == nil {
			have[table] = map[string]bool{}
		}
		have[table][name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list the columns of database %q: %w", db, err)
	}
	return have, nil
}

// ClickHouseStats are the writer's counters since it was opened.
type ClickHouseStats struct {
	RowsWritten uint64 // rows of successful inserts (schemas.MetricRowsWritten)
	Inserts     uint64 // successful INSERT statements
	Retries     uint64 // failed attempts that were retried
}

// Stats returns the writer's counters.
func (c *ClickHouse) Stats() ClickHouseStats {
	return ClickHouseStats{RowsWritten: c.rowsWritten.Load(), Inserts: c.inserts.Load(), Retries: c.retries.Load()}
}

// Retries returns how many insert attempts failed and were retried.
func (c *ClickHouse) Retries() uint64 { return c.retries.Load() }

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
// Rows of more than MaxDaysPerInsert days are split into several inserts, each
// of at most that many days. Each insert retries failed
// attempts with back-off; WriteScored returns only once every row is written,
// when ctx is done (the error then wraps ctx.Err() and the caller still holds
// the whole batch: inserts that succeeded before are written again when it
// retries, and collapse with their first copy, see ClickHouse), after
// MaxRetries retries, or when rec does not fit the table (a permanent error,
// returned at once).
func (c *ClickHouse) WriteScored(ctx context.Context, rec arrow.RecordBatch) error {
	rows := int(rec.NumRows())
	if rows == 0 {
		return nil
	}
	table := schemas.ScoredTable()
	groups := scoredDayGroups(table, rec)
	if groups == nil {
		return c.insertArrow(ctx, table, rec, nil)
	}
	for _, rows := range groups {
		if err := c.insertArrow(ctx, table, rec, rows); err != nil {
			return err
		}
	}
	return nil
}

// insertArrow inserts the rows of rec (only rows, when not nil) in one
// INSERT, retried, sent in blocks of InsertBlockRows.
func (c *ClickHouse) insertArrow(ctx context.Context, table *schemas.Table, rec arrow.RecordBatch, rows []int) error {
	cols, err := arrowColumns(table, rec, rows)
	if err != nil {
		return err
	}
	n := int(rec.NumRows())
	if rows != nil {
		n = len(rows)
	}
	return c.insert(ctx, table, n, fillBlocks(table, cols, n))
}

// fillBlocks returns a fill function appending n rows of cols in blocks of
// InsertBlockRows, each block but the last sent as soon as it is full
// (driver.Batch.Flush; Send sends the last).
func fillBlocks(table *schemas.Table, cols []columnFunc, n int) func(driver.Batch) error {
	return func(b driver.Batch) error {
		for lo := 0; lo < n; lo += InsertBlockRows {
			if lo > 0 {
				if err := b.Flush(); err != nil {
					return &sendError{err}
				}
			}
			hi := min(lo+InsertBlockRows, n)
			for i, col := range cols {
				if err := col(b.Column(i), lo, hi); err != nil {
					return fmt.Errorf("cannot append column %q: %w", table.Columns[i].Name, err)
				}
			}
		}
		return nil
	}
}

// WriteAlerts inserts alerts into the alerts table, retrying like WriteScored.
func (c *ClickHouse) WriteAlerts(ctx context.Context, alerts []schemas.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	table := schemas.AlertsTable()
	return c.insertColumns(ctx, table, len(alerts), alertColumns(alerts))
}

// WriteIncidents inserts incident updates into the incidents table, retrying
// like WriteScored. Every update is a row; the table keeps the highest
// version of each id.
func (c *ClickHouse) WriteIncidents(ctx context.Context, incs []schemas.Incident) error {
	if len(incs) == 0 {
		return nil
	}
	table := schemas.IncidentsTable()
	return c.insertColumns(ctx, table, len(incs), incidentColumns(incs))
}

// WriteDecisions inserts decisions into the decisions table, retrying like WriteScored.
func (c *ClickHouse) WriteDecisions(ctx context.Context, ds []schemas.Decision) error {
	if len(ds) == 0 {
		return nil
	}
	table := schemas.DecisionsTable()
	return c.insertColumns(ctx, table, len(ds), decisionColumns(ds))
}

// permanentError marks a failure that retrying cannot fix (the data does not
// fit the table).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// sendError marks a failure of fill to send a block of the INSERT (a
// connection's): retried, unlike the failure to append a value.
type sendError struct{ err error }

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

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
			c.inserts.Add(1)
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
		if se := (*sendError)(nil); errors.As(err, &se) {
			return se.err // retried
		}
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
