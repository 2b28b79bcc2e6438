package schemas

import "strings"

// DDL for a ClickHouse cluster (DDLOptions.Cluster).
//
// Every table T has, on each host of the cluster, a local part T_local
// (ReplacingMergeTree, or ReplicatedReplacingMergeTree when the shards have
// replicas) holding that shard's rows, and a Distributed table T over the
// local parts of every shard. Writers insert into T and readers query T, by
// the names they use on one server: the Distributed table sends each row to
// the shard that cityHash64(T.ShardKey) picks, and runs each query on every
// shard and merges the results. Because the shard key is part of the sorting
// key, every copy of a row (a retried insert, a redelivery) is on the same
// shard, where ReplacingMergeTree collapses them, and FINAL over T counts
// each row once.

// LocalName is the name of t's local part on each host of a cluster.
func (t *Table) LocalName() string { return t.Name + TableLocalSuffix }

// ShardingKey is the sharding expression of t's Distributed table:
// cityHash64 of its ShardKey columns.
func (t *Table) ShardingKey() string {
	var sb strings.Builder
	sb.WriteString("cityHash64(")
	for i, c := range t.ShardKey {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(QuoteIdent(c))
	}
	sb.WriteByte(')')
	return sb.String()
}

// CreateDistributedStatement returns the CREATE TABLE IF NOT EXISTS
// statement of t's Distributed table in db, over the local parts
// (LocalName) on every shard of cluster opts.Cluster, for a server with
// features f. It has t's name and columns.
func (t *Table) CreateDistributedStatement(db string, f ServerFeatures, opts DDLOptions) string {
	var sb strings.Builder
	t.writeCreateColumns(&sb, db, t.Name, f, opts)
	sb.WriteString("ENGINE = Distributed(")
	sb.WriteString(QuoteString(opts.Cluster))
	sb.WriteString(", ")
	sb.WriteString(QuoteString(db))
	sb.WriteString(", ")
	sb.WriteString(QuoteString(t.LocalName()))
	sb.WriteString(", ")
	sb.WriteString(t.ShardingKey())
	sb.WriteByte(')')
	return sb.String()
}

// writeCreateColumns writes "CREATE TABLE IF NOT EXISTS `db`.`name` [ON
// CLUSTER c]" and t's column list, each line ended.
func (t *Table) writeCreateColumns(sb *strings.Builder, db, name string, f ServerFeatures, opts DDLOptions) {
	sb.WriteString("CREATE TABLE IF NOT EXISTS ")
	sb.WriteString(QuoteIdent(db))
	sb.WriteByte('.')
	sb.WriteString(QuoteIdent(name))
	sb.WriteString(opts.onCluster())
	sb.WriteString("\n(\n")
	for i, c := range t.Columns {
		sb.WriteString("    ")
		sb.WriteString(QuoteIdent(c.Name))
		sb.WriteByte(' ')
		sb.WriteString(c.typeFor(f))
		if i < len(t.Columns)-1 {
			sb.WriteByte(',')
		}
		sb.WriteByte('\n')
	}
	sb.WriteString(")\n")
}

// onCluster is " ON CLUSTER `c`" when opts asks for distributed DDL, else "".
func (opts DDLOptions) onCluster() string {
	if !opts.OnCluster || opts.Cluster == "" {
		return ""
	}
	return " ON CLUSTER " + QuoteIdent(opts.Cluster)
}

// zooKeeperPath is the ZooKeeper path of local table name in db.
func (opts DDLOptions) zooKeeperPath(db, name string) string {
	p := opts.ZooKeeperPath
	if p == "" {
		p = DefaultZooKeeperPath
	}
	return strings.NewReplacer("{database}", db, "{table}", name).Replace(p)
}

// replicaName is the replica name of a Replicated local table.
func (opts DDLOptions) replicaName() string {
	if opts.ReplicaName == "" {
		return DefaultReplicaName
	}
	return opts.ReplicaName
}

// QuoteString quotes s as a ClickHouse string literal.
func QuoteString(s string) string {
	var sb strings.Builder
	sb.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' || s[i] == '\\' {
			sb.WriteByte('\\')
		}
		sb.WriteByte(s[i])
	}
	sb.WriteByte('\'')
	return sb.String()
}
