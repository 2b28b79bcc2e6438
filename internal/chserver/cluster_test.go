package chserver

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestCluster starts two servers that know each other as the shards of one
// cluster: each lists both in system.clusters, itself as local, and has its
// own shard macro; a Distributed table on one reaches the other's rows.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
	defer cancel()
	c, err := StartCluster(ctx, ClusterOptions{Name: "pair"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	}()
	if c.Name() != "pair" || len(c.Servers()) != 2 {
		t.Fatalf("cluster %q of %d servers, want pair of 2", c.Name(), len(c.Servers()))
	}
	for i, s := range c.Servers() {
		conn := open(t, s.DSN())
		rows, err := conn.Query(ctx, "SELECT shard_num, port, is_local FROM system.clusters WHERE cluster = 'pair' ORDER BY shard_num")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var shard uint32
			var port uint16
			var local uint8
			if err := rows.Scan(&shard, &port, &local); err != nil {
				t.Fatal(err)
			}
			if want := c.Servers()[n].TCPPort(); int(port) != want || shard != uint32(n+1) || (local == 1) != (n == i) {
				t.Errorf("server %d: shard %d: port %d, local %d; want port %d, local %v", i, shard, port, local, want, n == i)
			}
			n++
		}
		rows.Close()
		if n != 2 {
			t.Errorf("server %d lists %d shards, want 2", i, n)
		}
		var shard string
		if err := conn.QueryRow(ctx, "SELECT substitution FROM system.macros WHERE macro = '"+MacroShard+"'").Scan(&shard); err != nil || shard != strconv.Itoa(i+1) {
			t.Errorf("server %d: macro shard = %q (%v), want %d", i, shard, err, i+1)
		}
		if err := conn.Exec(ctx, "CREATE TABLE default.l (x UInt32) ENGINE = MergeTree() ORDER BY x"); err != nil {
			t.Fatal(err)
		}
		if err := conn.Exec(ctx, "INSERT INTO default.l (x) SELECT "+strconv.Itoa(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	conn := open(t, c.Servers()[0].DSN())
	if err := conn.Exec(ctx, "CREATE TABLE default.d (x UInt32) ENGINE = Distributed('pair', 'default', 'l', x)"); err != nil {
		t.Fatal(err)
	}
	var sum uint64
	if err := conn.QueryRow(ctx, "SELECT sum(x) FROM default.d").Scan(&sum); err != nil || sum != 3 {
		t.Errorf("sum over the Distributed table = %d (%v), want 3 (1 from each shard)", sum, err)
	}
}

// TestReplicatedCluster starts a ZooKeeper and one shard of two replicas
// with distributed DDL: a Replicated table created ON CLUSTER exists on both
// replicas, and a row inserted into one reaches the other.
func TestReplicatedCluster(t *testing.T) {
	if _, _, err := ZooKeeperAvailable(); err != nil {
		t.Fatalf("this test needs ZooKeeper: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
	defer cancel()
	zk, err := StartZooKeeper(ctx, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zk.Stop()
	c, err := StartCluster(ctx, ClusterOptions{Name: "rep", Shards: 1, Replicas: 2, ZooKeeper: zk.Addr(), DistributedDDL: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if len(c.Servers()) != 2 || c.Replicas() != 2 {
		t.Fatalf("%d servers, %d replicas; want 2 and 2", len(c.Servers()), c.Replicas())
	}
	a, b := open(t, c.Servers()[0].DSN()), open(t, c.Servers()[1].DSN())
	for _, stmt := range []string{
		"CREATE DATABASE IF NOT EXISTS r ON CLUSTER rep",
		"CREATE TABLE IF NOT EXISTS r.t ON CLUSTER rep (x UInt32) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/r/t', '{replica}') ORDER BY x",
	} {
		if err := a.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if err := a.Exec(ctx, "INSERT INTO r.t (x) SELECT 7"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute) // a hang bound
	for {
		var n uint64
		err := b.QueryRow(ctx, "SELECT count() FROM r.t WHERE x = 7").Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the row inserted on replica 1 is not on replica 2 after a minute (count %d, %v)", n, err)
		}
		time.Sleep(100 * time.Millisecond) // poll
	}
}
