package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/iotwatch/iotwatch/schemas"
)

// ClusterHost is one host of a ClickHouse cluster as the server's
// system.clusters lists it.
type ClusterHost struct {
	Shard, Replica uint32
	Host           string // host_name, as remote_servers names it
	Port           uint16 // native protocol port
}

// Addr is the host's "host:port".
func (h ClusterHost) Addr() string { return net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port))) }

// ClusterHosts returns the hosts of the writer's cluster, by shard then
// replica, as the server it is connected to lists them.
func (c *ClickHouse) ClusterHosts(ctx context.Context) ([]ClusterHost, error) {
	return c.clusterHosts(ctx)
}

func (c *ClickHouse) clusterHosts(ctx context.Context) ([]ClusterHost, error) {
	rows, err := c.conn.Query(ctx, "SELECT shard_num, replica_num, host_name, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num", c.cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("cannot list the hosts of ClickHouse cluster %q on %q: %w", c.cfg.Cluster, c.dsn, err)
	}
	defer rows.Close()
	var hosts []ClusterHost
	for rows.Next() {
		var h ClusterHost
		if err := rows.Scan(&h.Shard, &h.Replica, &h.Host, &h.Port); err != nil {
			return nil, fmt.Errorf("cannot list the hosts of ClickHouse cluster %q on %q: %w", c.cfg.Cluster, c.dsn, err)
		}
		hosts = append(hosts, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list the hosts of ClickHouse cluster %q on %q: %w", c.cfg.Cluster, c.dsn, err)
	}
	if len(hosts) == 0 {
		names, err := queryStrings(ctx, c.conn, "SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster")
		if err != nil {
			names = []string{"(cannot list them: " + err.Error() + ")"}
		}
		return nil, fmt.Errorf("cannot use ClickHouse cluster %q: the server at %q has no such cluster in its remote_servers (it has: %s)",
			c.cfg.Cluster, c.dsn, strings.Join(names, ", "))
	}
	return hosts, nil
}

// ClusterMigration says what MigrateCluster did.
type ClusterMigration struct {
	// Mode is how the DDL was applied: ClusterDDLOnCluster or ClusterDDLPerHost.
	Mode string
	// Hosts are the cluster's hosts ("host:port"): with ClusterDDLPerHost,
	// each was migrated over its own connection; with ClusterDDLOnCluster,
	// the server ran the DDL on them.
	Hosts []string
}

// MigrateCluster is Migrate on the writer's cluster: on every host, the
// database, each table's local part and its Distributed table when absent
// (schemas.DDL with DDLOptions.Cluster), then the columns a later release
// added, to both. ClickHouseConfig.ClusterDDL says how the statements reach
// the hosts; ClusterDDLAuto picks ClusterDDLOnCluster when the server has a
// ZooKeeper, and falls back to ClusterDDLPerHost when it has none or refuses
// ON CLUSTER for want of distributed DDL. With ClusterDDLOnCluster, columns are
// added ON CLUSTER to the local parts, but host by host to the Distributed
// tables (ClickHouse refuses ALTER ... ON CLUSTER of a Distributed table when
// shards have replicas), which then needs every host reachable, as
// ClusterDDLPerHost always does. A table that exists under a Distributed
// table's name with another engine (the table of a single-server install) is
// an error that says how to convert it; nothing is dropped or renamed.
func (c *ClickHouse) MigrateCluster(ctx context.Context) (ClusterMigration, error) {
	hosts, err := c.clusterHosts(ctx)
	if err != nil {
		return ClusterMigration{}, err
	}
	m := ClusterMigration{Mode: c.cfg.ClusterDDL}
	for _, h := range hosts {
		m.Hosts = append(m.Hosts, h.Addr())
	}
	if m.Mode == ClusterDDLAuto {
		var zk uint64
		if err := c.conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'system' AND name = 'zookeeper'").Scan(&zk); err != nil {
			return m, fmt.Errorf("cannot tell whether ClickHouse %q has a ZooKeeper: %w", c.dsn, err)
		}
		m.Mode = ClusterDDLPerHost
		if zk > 0 {
			m.Mode = ClusterDDLOnCluster
		}
	}
	opts := c.cfg.DDL
	local := func(t *schemas.Table) []string { return []string{t.LocalName()} }
	distributed := func(t *schemas.Table) []string { return []string{t.Name} }
	both := func(t *schemas.Table) []string { return []string{t.LocalName(), t.Name} }
	if m.Mode == ClusterDDLOnCluster {
		// Open this server's ZooKeeper session first: ClickHouse 18.16 crashes
		// on an ON CLUSTER statement when it has none yet (just started) or
		// cannot get one (ZooKeeper down); this query fails instead.
		var nodes uint64
		if err := c.conn.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&nodes); err != nil {
			return m, fmt.Errorf("cannot migrate ClickHouse cluster %q with ON CLUSTER: the server at %q cannot reach its ZooKeeper: %w "+
				"(start ZooKeeper, or use per-host DDL if the tables are not Replicated)", c.cfg.Cluster, c.dsn, err)
		}
		opts.OnCluster = true
		err := createTables(ctx, c.conn, c.version, c.db, opts, c.dsn)
		if err != nil && c.cfg.ClusterDDL == ClusterDDLAuto && noDistributedDDL(err) {
			// A ZooKeeper but no distributed_ddl section: nothing ran.
			c.log.Info("ClickHouse has no distributed DDL: migrating host by host", "cluster", c.cfg.Cluster, "dsn", c.dsn)
			m.Mode, opts.OnCluster = ClusterDDLPerHost, false
		} else if err != nil {
			return m, err
		}
	}
	if m.Mode == ClusterDDLOnCluster {
		if err := addColumns(ctx, c.conn, c.version, c.db, opts, c.dsn, local); err != nil {
			return m, err
		}
		// ClickHouse runs an ALTER ... ON CLUSTER on one replica of each shard
		// and refuses it for a table that does not replicate itself: a
		// Distributed table gets its new columns host by host, when this
		// host's lacks any.
		opts.OnCluster = false
		have, err := c.columns(ctx)
		if err != nil {
			return m, err
		}
		if !slices.ContainsFunc(schemas.Tables(), func(t *schemas.Table) bool {
			return len(t.AddColumnsTo(c.db, t.Name, have[t.Name], schemas.ServerFeatures{}, opts)) > 0
		}) {
			c.log.Info("ClickHouse cluster migrated with ON CLUSTER", "cluster", c.cfg.Cluster, "hosts", len(hosts), "replicated", opts.Replicated)
			return m, nil
		}
	}
	for _, h := range hosts {
		o := *c.opts
		o.Addr = []string{h.Addr()}
		conn, version, err := openConn(ctx, &o, h.Addr(), c.cfg)
		if err != nil {
			return m, fmt.Errorf("cannot migrate host %s (shard %d, replica %d) of ClickHouse cluster %q: %w", h.Addr(), h.Shard, h.Replica, c.cfg.Cluster, err)
		}
		if m.Mode == ClusterDDLOnCluster {
			err = addColumns(ctx, conn, version, c.db, opts, h.Addr(), distributed)
		} else if err = createTables(ctx, conn, version, c.db, opts, h.Addr()); err == nil {
			err = addColumns(ctx, conn, version, c.db, opts, h.Addr(), both)
		}
		conn.Close()
		if err != nil {
			return m, err
		}
		c.log.Info("ClickHouse host migrated", "cluster", c.cfg.Cluster, "mode", m.Mode, "host", h.Addr(), "shard", h.Shard, "replica", h.Replica, "version", version, "replicated", opts.Replicated)
	}
	return m, nil
}

// chLogicalError is ClickHouse's LOGICAL_ERROR code, which 18.16 returns for
// ON CLUSTER on a server without the distributed_ddl section.
const chLogicalError = 49

// noDistributedDDL reports whether err is a server's refusal of ON CLUSTER
// because it has no distributed DDL (18.16: "DDL background thread is not
// initialized"; later releases: "no DistributedDDL configuration").
func noDistributedDDL(err error) bool {
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return false
	}
	msg := strings.ToLower(ex.Message)
	return (ex.Code == chLogicalError && strings.Contains(msg, "ddl background thread is not initialized")) ||
		strings.Contains(msg, "distributedddl configuration")
}

// createTables runs the cluster DDL opts for database db on conn, a server
// of version version named where in errors, after checking that no table of
// a single-server install stands in the way.
func createTables(ctx context.Context, conn driver.Conn, version, db string, opts schemas.DDLOptions, where string) error {
	engines, err := tableEngines(ctx, conn, db)
	if err != nil {
		return fmt.Errorf("cannot migrate ClickHouse %q: %w", where, err)
	}
	for _, t := range schemas.Tables() {
		if e, ok := engines[t.Name]; ok && e != "Distributed" {
			return fmt.Errorf("cannot migrate ClickHouse %q to cluster %q: table %s.%s exists as a %s table, not a Distributed one "+
				"(it was created for one server); to keep its rows as this host's shard, run RENAME TABLE %s.%s TO %s.%s on this host "+
				"(for Replicated local parts, create them and move the rows instead), then migrate again",
				where, opts.Cluster, db, t.Name, e, schemas.QuoteIdent(db), schemas.QuoteIdent(t.Name), schemas.QuoteIdent(db), schemas.QuoteIdent(t.LocalName()))
		}
	}
	for _, stmt := range schemas.DDL(version, db, opts) {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("cannot migrate ClickHouse %q (server %s): %w\nstatement: %s", where, version, err, stmt)
		}
	}
	return nil
}

// addColumns adds, on conn, the columns that the tables names(t) of every
// table t lack (schemas.Table.AddColumnsTo), with ON CLUSTER when
// opts.OnCluster.
func addColumns(ctx context.Context, conn driver.Conn, version, db string, opts schemas.DDLOptions, where string, names func(*schemas.Table) []string) error {
	have, err := columnsOf(ctx, conn, db)
	if err != nil {
		return err
	}
	f := schemas.Features(version)
	for _, t := range schemas.Tables() {
		for _, name := range names(t) {
			for _, stmt := range t.AddColumnsTo(db, name, have[name], f, opts) {
				if err := conn.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("cannot migrate ClickHouse %q (server %s): %w\nstatement: %s", where, version, err, stmt)
				}
			}
		}
	}
	return nil
}

// tableEngines returns the engine of each table of database db on conn.
func tableEngines(ctx context.Context, conn driver.Conn, db string) (map[string]string, error) {
	rows, err := conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", db)
	if err != nil {
		return nil, fmt.Errorf("cannot list the tables of database %q: %w", db, err)
	}
	defer rows.Close()
	engines := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			return nil, fmt.Errorf("cannot list the tables of database %q: %w", db, err)
		}
		engines[name] = engine
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cannot list the tables of database %q: %w", db, err)
	}
	return engines, nil
}

// CheckCluster checks, on the server the writer is connected to, that every
// table is a Distributed table over the writer's cluster with every column
// the writer inserts. It changes nothing: `iotwatch run` checks rather than
// migrates a cluster, so that N instances starting together do not all send
// cluster DDL, and schema changes stay the operator's (iotwatch migrate
// --cluster). The error names what is missing and that command.
func (c *ClickHouse) CheckCluster(ctx context.Context) error {
	fix := fmt.Sprintf("run `iotwatch migrate --cluster %s --database %s`", c.cfg.Cluster, c.db)
	rows, err := c.conn.Query(ctx, "SELECT name, engine, engine_full FROM system.tables WHERE database = ?", c.db)
	if err != nil {
		return fmt.Errorf("cannot list the tables of database %q on %q: %w", c.db, c.dsn, err)
	}
	type table struct{ engine, full string }
	tables := map[string]table{}
	for rows.Next() {
		var name string
		var t table
		if err := rows.Scan(&name, &t.engine, &t.full); err != nil {
			rows.Close()
			return fmt.Errorf("cannot list the tables of database %q on %q: %w", c.db, c.dsn, err)
		}
		tables[name] = t
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("cannot list the tables of database %q on %q: %w", c.db, c.dsn, err)
	}
	have, err := c.columns(ctx)
	if err != nil {
		return err
	}
	for _, t := range schemas.Tables() {
		got, ok := tables[t.Name]
		switch {
		case !ok:
			return fmt.Errorf("cannot write to ClickHouse cluster %q: table %s.%s does not exist on %q: %s", c.cfg.Cluster, c.db, t.Name, c.dsn, fix)
		case got.engine != "Distributed":
			return fmt.Errorf("cannot write to ClickHouse cluster %q: table %s.%s on %q is a %s table, not Distributed: %s", c.cfg.Cluster, c.db, t.Name, c.dsn, got.engine, fix)
		case distributedCluster(got.full) != c.cfg.Cluster:
			return fmt.Errorf("cannot write to ClickHouse cluster %q: table %s.%s on %q is distributed over cluster %q", c.cfg.Cluster, c.db, t.Name, c.dsn, distributedCluster(got.full))
		}
		var missing []string
		for _, col := range t.ColumnNames() {
			if !have[t.Name][col] {
				missing = append(missing, col)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("cannot write to ClickHouse cluster %q: table %s.%s on %q lacks columns %q: %s", c.cfg.Cluster, c.db, t.Name, c.dsn, missing, fix)
		}
	}
	return nil
}

// distributedCluster returns the cluster a Distributed table's engine_full
// ("Distributed('c1', 'db', 't_local', key)") names.
func distributedCluster(engineFull string) string {
	args, ok := strings.CutPrefix(engineFull, "Distributed(")
	if !ok {
		return ""
	}
	first, _, _ := strings.Cut(args, ",")
	return strings.Trim(strings.TrimSpace(first), "'`\"")
}

// queryStrings returns the one String column of query's rows.
func queryStrings(ctx context.Context, conn driver.Conn, query string, args ...any) ([]string, error) {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
