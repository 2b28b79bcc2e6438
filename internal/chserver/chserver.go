// Package chserver starts and stops a private clickhouse-server process: its own
// data directory, its own free ports on 127.0.0.1, no password. The demo uses it
// when no ClickHouse DSN is given, and integration tests use it so that they run
// against the real server rather than a mock of it. StartCluster starts several
// that know each other as the shards and replicas of one cluster, and
// StartZooKeeper the private ZooKeeper their Replicated tables and ON CLUSTER
// statements need.
package chserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ErrNotFound is returned when no clickhouse-server binary can be found.
var ErrNotFound = errors.New("clickhouse-server not found: run `make deps` " +
	"(Debian: apt-get install clickhouse-server; elsewhere see https://clickhouse.com/docs/en/install)")

// Where Available looks after PATH. /usr/bin/clickhouse is the single binary of
// current releases, started as "clickhouse server".
var fallbackBinaries = []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse"}

// Available returns the path of the clickhouse-server binary that Start uses by
// default: clickhouse-server from PATH, else /usr/sbin/clickhouse-server, else
// /usr/bin/clickhouse. The error wraps ErrNotFound and says how to install it.
func Available() (path string, err error) { return findBinary("") }

func findBinary(explicit string) (string, error) {
	if explicit != "" {
		p, err := exec.LookPath(explicit)
		if err != nil {
			return "", fmt.Errorf("cannot use clickhouse binary %q: %w", explicit, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil
	}
	for _, p := range fallbackBinaries {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", ErrNotFound
}

// Options configures Start. The zero value is ready to use.
type Options struct {
	// Binary is the server binary: clickhouse-server, or the single "clickhouse"
	// binary. Default: see Available.
	Binary string
	// Dir holds the configuration, data and logs. Default: a new temporary
	// directory, removed by Stop. A Dir given here is kept, so a server can be
	// started again on the same data.
	Dir string
	// Log receives start/stop messages. Default: discarded.
	Log *slog.Logger
	// StartTimeout bounds the wait for the server to answer SELECT 1. Default 60s.
	StartTimeout time.Duration
	// TCPPort and HTTPPort fix the ports, for restarting a server on the ports it
	// had. Default (0): free ports picked by the kernel.
	TCPPort  int
	HTTPPort int
	// ExtraConfig is XML inserted into config.xml's root element, such as the
	// remote_servers, macros and zookeeper sections of a cluster member (see
	// StartCluster). It is written as given: escape what it quotes.
	ExtraConfig string
}

// Server is a running private clickhouse-server. Its methods are safe for
// concurrent use.
type Server struct {
	bin        string
	dir        string
	removeDir  bool
	tcpPort    int
	httpPort   int
	log        *slog.Logger
	cmd        *exec.Cmd
	exited     chan struct{} // closed when the process has exited
	waitErr    error         // valid after exited is closed
	stopOnce   sync.Once
	stopErr    error
	outputFile *os.File
	extra      string
}

// startAttempts bounds the retries when a freshly picked port was taken by
// another process before the server could bind it.
const startAttempts = 3

// Start starts a private clickhouse-server and waits until it answers SELECT 1
// over the native protocol. It listens on 127.0.0.1 only (native and HTTP
// ports; no interserver, MySQL or PostgreSQL listeners), with user "default"
// and no password. The server runs in its own process group and, on Linux, is
// killed by the kernel if the calling process dies. ctx bounds the start only,
// not the server's life: call Stop. On failure the error includes the tail of
// the server's logs.
func Start(ctx context.Context, o Options) (*Server, error) {
	bin, err := findBinary(o.Binary)
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	dir, removeDir := o.Dir, false
	if dir == "" {
		if dir, err = os.MkdirTemp("", "iotwatch-clickhouse-"); err != nil {
			return nil, fmt.Errorf("cannot create a directory for clickhouse-server: %w", err)
		}
		removeDir = true
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot resolve clickhouse-server directory %q: %w", o.Dir, err)
	}
	for attempt := 1; ; attempt++ {
		s := &Server{bin: bin, dir: dir, removeDir: removeDir, log: o.Log, tcpPort: o.TCPPort, httpPort: o.HTTPPort, extra: o.ExtraConfig}
		err = s.start(ctx, o.StartTimeout)
		if err == nil {
			return s, nil
		}
		fixedPorts := o.TCPPort != 0 && o.HTTPPort != 0
		if !errors.Is(err, errPortInUse) || fixedPorts || attempt == startAttempts || ctx.Err() != nil {
			break
		}
		o.Log.Warn("clickhouse-server port taken, retrying with other ports", "attempt", attempt, "err", err)
	}
	if removeDir {
		os.RemoveAll(dir)
	}
	return nil, err
}

var errPortInUse = errors.New("port already in use")

func (s *Server) start(ctx context.Context, timeout time.Duration) error {
	var err error
	if s.tcpPort == 0 {
		if s.tcpPort, err = freePort(); err != nil {
			return err
		}
	}
	for s.httpPort == 0 || s.httpPort == s.tcpPort {
		if s.httpPort, err = freePort(); err != nil {
			return err
		}
	}
	configFile, err := s.writeConfig()
	if err != nil {
		return err
	}
	args := []string{"--config-file=" + configFile}
	if filepath.Base(s.bin) == "clickhouse" {
		args = append([]string{"server"}, args...)
	}
	s.outputFile, err = os.OpenFile(filepath.Join(s.dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("cannot create clickhouse-server output file: %w", err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = s.outputFile
	cmd.Stderr = s.outputFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		s.outputFile.Close()
		return fmt.Errorf("cannot start %q: %w", s.bin, err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = cmd.Wait()
		s.outputFile.Close()
		close(s.exited)
	}()
	s.log.Info("clickhouse-server starting", "pid", cmd.Process.Pid, "tcp_port", s.tcpPort, "http_port", s.httpPort, "dir", s.dir)

	started := time.Now()
	if err := s.waitReady(ctx, timeout); err != nil {
		s.kill()
		tail := s.logTail()
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortInUse, err)
		}
		return fmt.Errorf("cannot start clickhouse-server (tcp port %d, dir %q): %w\n--- server log tail ---\n%s", s.tcpPort, s.dir, err, tail)
	}
	s.log.Info("clickhouse-server ready", "pid", cmd.Process.Pid, "dsn", s.DSN(), "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// waitReady polls SELECT 1 until it succeeds, the process exits, ctx is done or
// timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort))},
		DialTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("cannot create a client: %w", err)
	}
	defer conn.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		pingCtx, pingCancel := context.WithTimeout(ctx, 2*time.Second)
		var one uint8
		lastErr = conn.QueryRow(pingCtx, "SELECT 1").Scan(&one)
		pingCancel()
		if lastErr == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("server exited before it was ready: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w (last error: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// writeConfig writes config.xml and users.xml into s.dir and creates the
// directories they name. It returns the path of config.xml.
func (s *Server) writeConfig() (string, error) {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(s.dir, sub), 0o755); err != nil {
			return "", fmt.Errorf("cannot create clickhouse-server directory: %w", err)
		}
	}
	p := func(sub string) string { return xmlEscape(filepath.Join(s.dir, sub)) + "/" }
	config := `<?xml version="1.0"?>
<!-- Written by iotwatch chserver: a private server for tests and the demo. -->
<yandex>
    <logger>
        <level>information</level>
        <log>` + xmlEscape(filepath.Join(s.dir, "log", "clickhouse-server.log")) + `</log>
        <errorlog>` + xmlEscape(filepath.Join(s.dir, "log", "clickhouse-server.err.log")) + `</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>` + strconv.Itoa(s.tcpPort) + `</tcp_port>
    <http_port>` + strconv.Itoa(s.httpPort) + `</http_port>
    <path>` + p("data") + `</path>
    <tmp_path>` + p("tmp") + `</tmp_path>
    <user_files_path>` + p("user_files") + `</user_files_path>
    <format_schema_path>` + p("format_schemas") + `</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mlock_executable>false</mlock_executable>
` + s.extra + `
</yandex>
`
	users := `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- Idle connections notice a shutdown within this many seconds (default 10). -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`
	configFile := filepath.Join(s.dir, "config.xml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		return "", fmt.Errorf("cannot write clickhouse-server config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "users.xml"), []byte(users), 0o644); err != nil {
		return "", fmt.Errorf("cannot write clickhouse-server users: %w", err)
	}
	return configFile, nil
}

func xmlEscape(s string) string {
	var b bytes.Buffer
	for _, r := range s {
		switch r {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// logTail returns the last lines of the server's logs, for error messages.
func (s *Server) logTail() string {
	const maxBytes = 4 << 10
	var out strings.Builder
	for _, name := range []string{"clickhouse-server.err.log", "clickhouse-server.log", "stdout.log"} {
		b, err := os.ReadFile(filepath.Join(s.dir, "log", name))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		if len(b) > maxBytes {
			b = b[len(b)-maxBytes:]
			if i := bytes.IndexByte(b, '\n'); i >= 0 {
				b = b[i+1:]
			}
		}
		fmt.Fprintf(&out, "[%s]\n%s\n", name, bytes.TrimRight(b, "\n"))
	}
	if out.Len() == 0 {
		return "(no log output)"
	}
	return out.String()
}

// DSN returns the server's native-protocol address as a clickhouse-go DSN:
// "clickhouse://127.0.0.1:PORT/default".
func (s *Server) DSN() string {
	return "clickhouse://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tcpPort)) + "/default"
}

// TCPPort returns the native-protocol port.
func (s *Server) TCPPort() int { return s.tcpPort }

// HTTPPort returns the HTTP port.
func (s *Server) HTTPPort() int { return s.httpPort }

// Dir returns the server's directory (configuration, data under data/, logs under log/).
func (s *Server) Dir() string { return s.dir }

// ClientCommand returns a shell command that opens clickhouse-client on the
// server, such as "clickhouse-client --port 12345".
func (s *Server) ClientCommand() string {
	port := strconv.Itoa(s.tcpPort)
	if _, err := exec.LookPath("clickhouse-client"); err != nil && filepath.Base(s.bin) == "clickhouse" {
		return s.bin + " client --port " + port
	}
	return "clickhouse-client --port " + port
}

// stopTimeout is how long Stop waits after SIGTERM before it kills the server.
const stopTimeout = 10 * time.Second

// Stop shuts the server down: SIGTERM to its process group, then SIGKILL if it
// has not exited within 10 seconds. It removes the directory if Start created
// it. Stop is idempotent; later calls return the first call's result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.stopErr = s.stop()
	})
	return s.stopErr
}

func (s *Server) stop() error {
	select {
	case <-s.exited:
	default:
		if err := terminate(s.cmd.Process); err != nil {
			s.log.Warn("cannot send SIGTERM to clickhouse-server", "pid", s.cmd.Process.Pid, "err", err)
		}
		timer := time.NewTimer(stopTimeout)
		defer timer.Stop()
		select {
		case <-s.exited:
		case <-timer.C:
			s.log.Warn("clickhouse-server did not stop in time, killing it", "pid", s.cmd.Process.Pid, "timeout", stopTimeout)
			s.kill()
		}
	}
	s.log.Info("clickhouse-server stopped", "pid", s.cmd.Process.Pid)
	if s.removeDir {
		if err := os.RemoveAll(s.dir); err != nil {
			return fmt.Errorf("cannot remove clickhouse-server directory %q: %w", s.dir, err)
		}
	}
	return nil
}

// kill kills the process group and waits for the process to exit.
func (s *Server) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	if err := kill(s.cmd.Process); err != nil {
		s.log.Warn("cannot kill clickhouse-server", "pid", s.cmd.Process.Pid, "err", err)
	}
	<-s.exited
}
