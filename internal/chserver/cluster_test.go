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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
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
