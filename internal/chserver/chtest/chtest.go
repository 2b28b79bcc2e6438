// Package chtest shares one private clickhouse-server among the tests of a
// package (test support, like net/http/httptest).
package chtest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/chserver"
)

// Shared is one private server for the tests of a package, started by the
// first test that needs it; TestMain stops it (Main, or Stop after m.Run). The zero value is
// ready to use.
type Shared struct {
	once sync.Once
	srv  *chserver.Server
	err  error
}

// Get returns the server, starting it on first use. A missing or failing
// server fails the test with the reason (the install instructions when the
// binary is missing): tests that need ClickHouse never skip.
func (s *Shared) Get(t testing.TB) *chserver.Server {
	t.Helper()
	s.once.Do(func() {
		if _, s.err = chserver.Available(); s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
		defer cancel()
		s.srv, s.err = chserver.Start(ctx, chserver.Options{})
	})
	if s.err != nil {
		t.Fatalf("these tests need a real ClickHouse server: %v", s.err)
	}
	return s.srv
}

// Main runs m's tests, then stops the server, and returns m.Run's exit code;
// a package's TestMain is os.Exit(shared.Main(m)).
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot stop the test clickhouse-server:", err)
	}
	return code
}

// Stop stops the server if a test started it.
func (s *Shared) Stop() error {
	if s.srv == nil {
		return nil
	}
	return s.srv.Stop()
}

// SharedCluster is one private cluster (chserver.StartCluster) for the tests
// of a package, started by the first test that needs it with Options; stop it
// after m.Run with Stop. The zero value is a cluster of two shards named
// "iotwatch".
type SharedCluster struct {
	Options chserver.ClusterOptions
	once    sync.Once
	c       *chserver.Cluster
	err     error
}

// Get returns the cluster, starting it on first use. A missing or failing
// server fails the test with the reason: tests that need ClickHouse never skip.
func (s *SharedCluster) Get(t testing.TB) *chserver.Cluster {
	t.Helper()
	s.once.Do(func() {
		if _, s.err = chserver.Available(); s.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang bound
		defer cancel()
		s.c, s.err = chserver.StartCluster(ctx, s.Options)
	})
	if s.err != nil {
		t.Fatalf("these tests need a real ClickHouse cluster: %v", s.err)
	}
	return s.c
}

// Stop stops the cluster if a test started it.
func (s *SharedCluster) Stop() error {
	if s.c == nil {
		return nil
	}
	return s.c.Stop()
}
