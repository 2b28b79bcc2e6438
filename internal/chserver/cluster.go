package chserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClusterOptions configures StartCluster. The zero value is ready to use.
type ClusterOptions struct {
	// Name is the cluster's name in remote_servers (what Distributed tables and
	// ON CLUSTER name). Default "iotwatch".
	Name string
	// Shards is the number of shards, one server each (one replica per
	// shard). Default 2.
	Shards int
	// ZooKeeper, when set ("host:port"), gives every server a zookeeper
	// section naming it and a distributed_ddl section (ON CLUSTER), as a
	// replicated cluster has. The servers start whether or not a ZooKeeper
	// answers there; what needs it (Replicated tables, ON CLUSTER) fails on
	// the connection when none does.
	ZooKeeper string
	// Binary, Log and StartTimeout are as in Options, for every server.
	Binary       string
	Log          *slog.Logger
	StartTimeout time.Duration
}

// Cluster is a running set of private servers that know each other as the
// shards of one cluster (remote_servers) on 127.0.0.1. Its methods are safe for
// concurrent use.
type Cluster struct {
	name    string
	servers []*Server
}

// Macros that StartCluster defines on every server, for Replicated tables'
// ZooKeeper paths and replica names: {shard} is the server's shard number
// (1, 2, ...), {replica} its host and port ("127.0.0.1-9000").
const (
	MacroShard   = "shard"
	MacroReplica = "replica"
)

// StartCluster starts o.Shards private servers (see Start) whose
// configuration names them all, in order, as the shards of cluster o.Name
// (remote_servers, one replica per shard, internal_replication true) and
// defines the macros {shard} and {replica}. The servers start concurrently;
// on failure, those that started are stopped. Stop stops them all.
func StartCluster(ctx context.Context, o ClusterOptions) (*Cluster, error) {
	if o.Name == "" {
		o.Name = "iotwatch"
	}
	if o.Shards <= 0 {
		o.Shards = 2
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
	// Every server's configuration lists every server's port: pick them all first.
	ports := make([]int, 0, 2*o.Shards)
	for len(ports) < 2*o.Shards {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !containsInt(ports, p) {
			ports = append(ports, p)
		}
	}
	remote := remoteServers(o.Name, ports[:o.Shards])
	c := &Cluster{name: o.Name, servers: make([]*Server, o.Shards)}
	errs := make([]error, o.Shards)
	var wg sync.WaitGroup
	for i := range o.Shards {
		wg.Go(func() {
			extra := remote + macros(i+1, ports[i])
			if o.ZooKeeper != "" {
				extra += zooKeeper(o.ZooKeeper)
			}
			c.servers[i], errs[i] = Start(ctx, Options{
				Binary: o.Binary, Log: o.Log, StartTimeout: o.StartTimeout,
				TCPPort: ports[i], HTTPPort: ports[o.Shards+i], ExtraConfig: extra,
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("cannot start cluster %q of %d shards: %w", o.Name, o.Shards, err)
	}
	return c, nil
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// remoteServers is the remote_servers section of a cluster whose shards are
// the servers on 127.0.0.1 at ports, in order.
func remoteServers(name string, ports []int) string {
	var sb strings.Builder
	sb.WriteString("    <remote_servers>\n        <" + xmlEscape(name) + ">\n")
	for _, p := range ports {
		sb.WriteString("            <shard>\n                <internal_replication>true</internal_replication>\n")
		sb.WriteString("                <replica><host>127.0.0.1</host><port>" + strconv.Itoa(p) + "</port></replica>\n")
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

// zooKeeper is the zookeeper and distributed_ddl sections for a ZooKeeper at
// addr ("host:port").
func zooKeeper(addr string) string {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		port = "2181"
	}
	return "    <zookeeper>\n        <node><host>" + xmlEscape(host) + "</host><port>" + xmlEscape(port) + "</port></node>\n" +
		"        <session_timeout_ms>5000</session_timeout_ms>\n    </zookeeper>\n" +
		"    <distributed_ddl>\n        <path>/clickhouse/task_queue/ddl</path>\n    </distributed_ddl>\n"
}

// Name returns the cluster's name in remote_servers.
func (c *Cluster) Name() string { return c.name }

// Servers returns the servers: Servers()[i] is shard i+1. The caller must
// not modify the slice.
func (c *Cluster) Servers() []*Server { return c.servers }

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
