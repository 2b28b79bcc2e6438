package natsserver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterLeaderKill starts three nodes of the nats-server at the go.mod
// version, kills the leader of an R3 stream with SIGKILL, and checks that
// another node leads it with every message kept, and that the killed node
// rejoins.
func TestClusterLeaderKill(t *testing.T) {
	c, err := StartCluster(ClusterOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("cannot connect: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang bound
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatalf("cannot create R3 stream: %v", err)
	}
	for i := range 100 {
		if _, err := js.Publish(ctx, "t.x", []byte{byte(i)}); err != nil {
			t.Fatalf("cannot publish: %v", err)
		}
	}
	leader, err := c.StreamLeader(ctx, nc, "T")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(leader)
	var next int
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		next, err = c.StreamLeader(actx, nc, "T")
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no new leader of stream T after killing %s: %v", c.Name(leader), err)
		}
	}
	if next == leader {
		t.Fatalf("stream T is still led by the killed node %s", c.Name(leader))
	}
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 100 {
		t.Fatalf("stream T holds %d messages after the leader kill, want 100", info.State.Msgs)
	}
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
}

func TestFindModuleBinaryNamesMake(t *testing.T) {
	t.Setenv(ModuleBinaryEnv, "/nonexistent/nats-server")
	_, err := FindModuleBinary()
	if err == nil || !strings.Contains(err.Error(), "make nats-server") {
		t.Fatalf("error %v; want one that names `make nats-server`", err)
	}
}
