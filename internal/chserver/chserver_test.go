package chserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// srv is the one server shared by the tests of this package.
var srv *Server

func TestMain(m *testing.M) {
	if _, err := Available(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: these tests need a real ClickHouse server:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	var err error
	srv, err = Start(ctx, Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot start clickhouse-server:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := srv.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: cannot stop clickhouse-server:", err)
		code = 1
	}
	if _, err := os.Stat(srv.Dir()); !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "FAIL: Stop left the temporary directory %q behind (stat: %v)\n", srv.Dir(), err)
		code = 1
	}
	os.Exit(code)
}

func open(t *testing.T, dsn string) driver.Conn {
	t.Helper()
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("cannot parse DSN %q: %v", dsn, err)
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatalf("cannot open %q: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestServer(t *testing.T) {
	want := "clickhouse://127.0.0.1:" + strconv.Itoa(srv.TCPPort()) + "/default"
	if srv.DSN() != want {
		t.Errorf("DSN = %q, want %q", srv.DSN(), want)
	}
	if srv.TCPPort() == srv.HTTPPort() || srv.TCPPort() == 9000 {
		t.Errorf("ports tcp=%d http=%d: want two distinct free ports", srv.TCPPort(), srv.HTTPPort())
	}
	if got := srv.ClientCommand(); !strings.HasSuffix(got, " --port "+strconv.Itoa(srv.TCPPort())) {
		t.Errorf("ClientCommand = %q, want it to name port %d", got, srv.TCPPort())
	}

	conn := open(t, srv.DSN())
	ctx := context.Background()
	var version, tz string
	if err := conn.QueryRow(ctx, "SELECT version(), timezone()").Scan(&version, &tz); err != nil {
		t.Fatalf("cannot query the server: %v", err)
	}
	if version == "" || !strings.Contains(tz, "UTC") {
		t.Errorf("version %q, timezone %q: want a version and UTC", version, tz)
	}
	t.Logf("clickhouse-server %s", version)

	// Data goes under the private directory, not /var/lib/clickhouse.
	if err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS default.probe (x UInt8) ENGINE = MergeTree() ORDER BY x"); err != nil {
		t.Fatalf("cannot create a table: %v", err)
	}
	if _, err := os.Stat(filepath.Join(srv.Dir(), "data", "metadata", "default", "probe.sql")); err != nil {
		t.Errorf("table data is not under the private directory: %v", err)
	}
	if err := conn.Exec(ctx, "DROP TABLE default.probe"); err != nil {
		t.Fatalf("cannot drop the table: %v", err)
	}
}

// TestRestartKeepsData stops a server started on a directory of the caller's and
// starts it again on the same directory and ports: the data is still there, and
// Stop kept the directory.
func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s1, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pid := s1.cmd.Process.Pid
	conn := open(t, s1.DSN())
	if err := conn.Exec(ctx, "CREATE TABLE default.kept (x UInt32) ENGINE = MergeTree() ORDER BY x"); err != nil {
		s1.Stop()
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "INSERT INTO default.kept (x) SELECT 42"); err != nil {
		s1.Stop()
		t.Fatal(err)
	}
	stopStart := time.Now()
	if err := s1.Stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(stopStart); took > 5*time.Second {
		t.Errorf("Stop took %v with an idle client connection, want a few seconds", took)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config.xml")); err != nil {
		t.Fatalf("Stop removed a directory it did not create: %v", err)
	}

	s2, err := Start(ctx, Options{Dir: dir, TCPPort: s1.TCPPort(), HTTPPort: s1.HTTPPort()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Stop()
	if s2.DSN() != s1.DSN() {
		t.Errorf("restarted DSN %q, want %q", s2.DSN(), s1.DSN())
	}
	conn2 := open(t, s2.DSN())
	var x uint32
	if err := conn2.QueryRow(ctx, "SELECT x FROM default.kept").Scan(&x); err != nil || x != 42 {
		t.Errorf("after restart: x = %d, err = %v; want 42", x, err)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-clickhouse-server")
	script := "#!/bin/sh\necho 'DB::Exception: something is badly wrong' >&2\nexit 3\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{Binary: fake, Dir: filepath.Join(dir, "srv"), StartTimeout: 20 * time.Second})
	if err == nil {
		t.Fatal("Start succeeded with a binary that exits at once")
	}
	for _, want := range []string{"exited before it was ready", "something is badly wrong"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not contain %q:\n%v", want, err)
		}
	}
}

func TestStartTimeout(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "silent-server")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := Start(context.Background(), Options{Binary: fake, StartTimeout: 300 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("Start of a server that never answers: err = %v, want a timeout", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("Start took %v to give up, want about the timeout", took)
	}
}

func TestBinaryNotFound(t *testing.T) {
	_, err := Start(context.Background(), Options{Binary: "/nonexistent/clickhouse-server"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/clickhouse-server") {
		t.Errorf("err = %v, want one naming the missing binary", err)
	}
	if !strings.Contains(ErrNotFound.Error(), "apt-get install clickhouse-server") {
		t.Errorf("ErrNotFound does not say how to install: %v", ErrNotFound)
	}
}
