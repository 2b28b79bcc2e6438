package chserver

import (
	"bufio"
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
)

// ErrZooKeeperNotFound is returned when Java or ZooKeeper's jar is missing.
var ErrZooKeeperNotFound = errors.New("zookeeper not found: run `make deps` (Debian: apt-get install zookeeper; " +
	"ClickHouse 18.16 needs it for Replicated tables and ON CLUSTER)")

// zooKeeperJar is where Debian's zookeeper package puts the server (its
// manifest names the libraries it needs).
const zooKeeperJar = "/usr/share/java/zookeeper.jar"

// ZooKeeperAvailable returns the java binary and the jar StartZooKeeper runs.
// The error wraps ErrZooKeeperNotFound.
func ZooKeeperAvailable() (java, jar string, err error) {
	java, err = exec.LookPath("java")
	if err != nil {
		return "", "", fmt.Errorf("%w: no java in PATH", ErrZooKeeperNotFound)
	}
	if _, err := os.Stat(zooKeeperJar); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrZooKeeperNotFound, err)
	}
	return java, zooKeeperJar, nil
}

// ZooKeeper is a running private single-node ZooKeeper (standalone mode) on
// 127.0.0.1, for the Replicated tables and distributed DDL of a test
// cluster. Its methods are safe for concurrent use.
type ZooKeeper struct {
	port     int
	dir      string
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *slog.Logger
	stopOnce sync.Once
	stopErr  error
}

// StartZooKeeper starts a standalone ZooKeeper (Debian's package) in a new
// temporary directory on a free port of 127.0.0.1 and waits until it answers
// the srvr command, at most timeout (default 60s). Like Start, it runs in its
// own process group and dies with the calling process on Linux. Stop stops it
// and removes the directory.
func StartZooKeeper(ctx context.Context, log *slog.Logger, timeout time.Duration) (*ZooKeeper, error) {
	java, jar, err := ZooKeeperAvailable()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	dir, err := os.MkdirTemp("", "iotwatch-zookeeper-")
	if err != nil {
		return nil, fmt.Errorf("cannot create a directory for zookeeper: %w", err)
	}
	port, err := freePort()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cfg := "tickTime=500\ninitLimit=10\nsyncLimit=5\n" +
		"dataDir=" + filepath.Join(dir, "data") + "\n" +
		"clientPort=" + strconv.Itoa(port) + "\nclientPortAddress=127.0.0.1\n" +
		"maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n"
	cfgFile := filepath.Join(dir, "zoo.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot write zookeeper config: %w", err)
	}
	out, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot create zookeeper output file: %w", err)
	}
	cmd := exec.Command(java, "-Xmx256m", "-Dzookeeper.admin.enableServer=false", "-cp", jar,
		"org.apache.zookeeper.server.ZooKeeperServerMain", cfgFile)
	cmd.Dir, cmd.Stdout, cmd.Stderr, cmd.SysProcAttr = dir, out, out, sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("cannot start zookeeper: %w", err)
	}
	z := &ZooKeeper{port: port, dir: dir, cmd: cmd, exited: make(chan struct{}), log: log}
	go func() {
		cmd.Wait()
		out.Close()
		close(z.exited)
	}()
	if err := z.waitReady(ctx, timeout); err != nil {
		tail, _ := os.ReadFile(filepath.Join(dir, "out.log"))
		z.Stop()
		return nil, fmt.Errorf("cannot start zookeeper on port %d: %w\n--- output ---\n%s", port, err, lastBytes(tail, 4<<10))
	}
	log.Info("zookeeper ready", "pid", cmd.Process.Pid, "addr", z.Addr())
	return z, nil
}

// waitReady polls the srvr command until ZooKeeper reports its mode.
func (z *ZooKeeper) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = z.srvr(); lastErr == nil {
			return nil
		}
		select {
		case <-z.exited:
			return fmt.Errorf("zookeeper exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("zookeeper not ready: %w (last error: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// srvr sends the srvr four-letter command and checks the answer names a mode.
func (z *ZooKeeper) srvr() error {
	conn, err := net.DialTimeout("tcp", z.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("srvr")); err != nil {
		return err
	}
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Mode:") {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("no mode in the srvr answer")
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Addr returns the client address, "127.0.0.1:PORT" (ClusterOptions.ZooKeeper).
func (z *ZooKeeper) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(z.port)) }

// Stop kills ZooKeeper's process group, waits for it to exit and removes its
// directory. It is idempotent.
func (z *ZooKeeper) Stop() error {
	z.stopOnce.Do(func() {
		select {
		case <-z.exited:
		default:
			if err := kill(z.cmd.Process); err != nil {
				z.log.Warn("cannot kill zookeeper", "pid", z.cmd.Process.Pid, "err", err)
			}
			<-z.exited
		}
		if err := os.RemoveAll(z.dir); err != nil {
			z.stopErr = fmt.Errorf("cannot remove zookeeper directory %q: %w", z.dir, err)
		}
	})
	return z.stopErr
}
