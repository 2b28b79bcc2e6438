package chserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClusterOptions configures StartCluster. The zero value is ready to use.
type ClusterOptions struct {
	// Name is the cluster's name in remote_servers (what Distributed tables and
	// ON CLUSTER name). Default "iotwatch".
	Name string
	// Shards is the number of shards. Default 2.
	Shards int
	// Replicas is the number of servers per shard. Default 1. More than one
	// needs ZooKeeper for the Replicated tables that keep them in step.
	Replicas int
	// ZooKeeper, when set ("host:port", such as ZooKeeper.Addr), gives every
	// server a zookeeper section naming it and an interserver HTTP port (for
	// replicas to fetch parts from each other). The servers start whether or
	// not a ZooKeeper answers there; Replicated tables fail on the connection
	// when none does.
	ZooKeeper string
	// DistributedDDL adds the distributed_ddl section (ON CLUSTER); it needs
	// ZooKeeper. Without a ZooKeeper that answers, ClickHouse 18.16 may crash
	// on an ON CLUSTER statement.
	DistributedDDL bool
	// Binary, Log and StartTimeout are as in Options, for every server.
	Binary       string
	Log          *slog.Logger
	StartTimeout time.Duration
}

// Cluster is a running set of private servers that know each other as the
// shards of one cluster (remote_servers) on 127.0.0.1. Its methods are safe for
// concurrent use.
type Cluster struct {
	name     string
	servers  []*Server
	replicas int
}

// Macros that StartCluster defines on every server, for Replicated tables'
// ZooKeeper paths and replica names: {shard} is the server's shard number
// (1, 2, ...), {replica} its host and port ("127.0.0.1-9000").
const (
	MacroShard   = "shard"
	MacroReplica = "replica"
)

// StartCluster starts o.Shards × o.Replicas private servers (see Start) whose
// configuration names them all as the shards and replicas of cluster o.Name
// (remote_servers, internal_replication true) and defines the macros {shard}
// and {replica}. The servers start concurrently; on failure, those that
// started are stopped. Stop stops them all.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.Name == "" {
		o.Name = "iotwatch"
	}
	if o.Shards <= 0 {
		o.Shards = 2
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DistributedDDL && o.ZooKeeper == "" {
		return nil, errors.New("cannot start a cluster with distributed DDL but no ZooKeeper")
	}
	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		c, err := startCluster(ctx, o)
		if err == nil {
			return c, nil
		}
		lastErr = err
		if !errors.Is(err, errPortInUse) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	// Every server's configuration lists every server's port: pick them all
	// first (native, HTTP and interserver HTTP for each server).
	n := o.Shards * o.Replicas
	ports := make([]int, 0, 3*n)
	for len(ports) < 3*n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !containsInt(ports, p) {
			ports = append(ports, p)
		}
	}
	remote := remoteServers(o.Name, o.Replicas, ports[:n])
	c := &Cluster{name: o.Name, servers: make([]*Server, n)}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			extra := remote + macros(i/o.Replicas+1, ports[i])
			if o.ZooKeeper != "" {
				extra += zooKeeper(o.ZooKeeper, ports[2*n+i], o.DistributedDDL)
			}
			c.servers[i], errs[i] = Start(ctx, Options{
				Binary: o.Binary, Log: o.Log, StartTimeout: o.StartTimeout,
				TCPPort: ports[i], HTTPPort: ports[n+i], ExtraConfig: extra,
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err == nil && o.ZooKeeper != "" {
		for i, s := range c.servers {
			if errs[i] = s.waitZooKeeper(ctx, o.StartTimeout); errs[i] != nil {
				break
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("cannot start cluster %q of %d shards × %d replicas: %w", o.Name, o.Shards, o.Replicas, err)
	}
	c.replicas = o.Replicas
	return c, nil
}

// waitZooKeeper polls system.zookeeper until the server's ZooKeeper session
// works, at most timeout (default 60s). ClickHouse 18.16 answers queries
// before that, and crashes (a null pointer in zkutil::ZooKeeper::createImpl)
// on an ON CLUSTER statement that arrives in between.
func (s *Server) waitZooKeeper(ctx context.Context, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort))}, DialTimeout: time.Second})
	if err != nil {
		return fmt.Errorf("cannot create a client: %w", err)
	}
	defer conn.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM system.zookeeper WHERE path = '/'").Scan(&n)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse-server on port %d has no ZooKeeper session: %w (last error: %v)", s.tcpPort, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// remoteServers is the remote_servers section of a cluster whose servers
// are on 127.0.0.1 at ports, in order, replicas servers per shard.
func remoteServers(name string, replicas int, ports []int) string {
	var sb strings.Builder
	sb.WriteString("    <remote_servers>\n        <" + xmlEscape(name) + ">\n")
	for first := 0; first < len(ports); first += replicas {
		sb.WriteString("            <shard>\n                <internal_replication>true</internal_replication>\n")
		for _, p := range ports[first : first+replicas] {
			sb.WriteString("                <replica><host>127.0.0.1</host><port>" + strconv.Itoa(p) + "</port></replica>\n")
		}
		sb.WriteString("            </shard>\n")
	}
	sb.WriteString("        </" + xmlEscape(name) + ">\n    </remote_servers>\n")
	return sb.String()
}

// macros is the macros section of shard number shard, served at port.
func macros(shard, port int) string {
	return "    <macros>\n        <" + MacroShard + ">" + strconv.Itoa(shard) + "</" + MacroShard + ">\n" +
		"        <" + MacroReplica + ">127.0.0.1-" + strconv.Itoa(port) + "</" + MacroReplica + ">\n    </macros>\n"
}

// zooKeeper is the zookeeper section for a ZooKeeper at addr ("host:port"),
// the interserver HTTP port replicas fetch parts on, and, with ddl, the
// distributed_ddl section.
func zooKeeper(addr string, interserverPort int, ddl bool) string {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		port = "2181"
	}
	s := "    <zookeeper>\n        <node><host>" + xmlEscape(host) + "</host><port>" + xmlEscape(port) + "</port></node>\n" +
		"        <session_timeout_ms>10000</session_timeout_ms>\n    </zookeeper>\n" +
		"    <interserver_http_host>127.0.0.1</interserver_http_host>\n" +
		"    <interserver_http_port>" + strconv.Itoa(interserverPort) + "</interserver_http_port>\n"
	if ddl {
		s += "    <distributed_ddl>\n        <path>/clickhouse/task_queue/ddl</path>\n    </distributed_ddl>\n"
	}
	return s
}

// Name returns the cluster's name in remote_servers.
func (c *Cluster) Name() string { return c.name }

// Servers returns the servers, shard by shard: with R replicas per shard,
// Servers()[i] is replica i%R+1 of shard i/R+1. The caller must not modify
// the slice.
func (c *Cluster) Servers() []*Server { return c.servers }

// Replicas returns the number of servers per shard.
func (c *Cluster) Replicas() int { return c.replicas }

// Stop stops every server (see Server.Stop) and returns their errors joined.
func (c *Cluster) Stop() error {
	errs := make([]error, len(c.servers))
	var wg sync.WaitGroup
	for i, s := range c.servers {
		if s == nil {
			continue
		}
		wg.Go(func() { errs[i] = s.Stop() })
	}
	wg.Wait()
	return errors.Join(errs...)
}
