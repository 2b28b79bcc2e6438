package natsserver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// ProcessOptions configures StartProcess.
type ProcessOptions struct {
	// Binary is the nats-server executable. Empty: $IOTWATCH_NATS_SERVER, else
	// nats-server on $PATH, else /usr/sbin/nats-server (Debian's 2.9).
	Binary string
	// Config is a configuration file given with -c, loaded as it is (its
	// includes are relative to its own directory). Empty: none.
	Config string
	// StoreDir is the JetStream store (-sd, which also enables JetStream). It
	// overrides the file's store_dir. Required.
	StoreDir string
	// Env is added to the server's environment (variables the file refers to).
	Env []string
	// Port is the client port on 127.0.0.1; 0 picks a free one. A cluster
	// node restarted on its port is found again by the clients that knew it.
	Port int
	// Args are added to the command line after the options above.
	Args []string
}

// Process is a nats-server process listening on a free port of 127.0.0.1.
type Process struct {
	cmd  *exec.Cmd
	url  string
	out  *syncBuffer
	done chan struct{}
	err  error // the process's exit, valid once done is closed
}

// FindBinary returns the nats-server executable StartProcess runs by default.
func FindBinary() (string, error) {
	if p := os.Getenv("IOTWATCH_NATS_SERVER"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
		return "/usr/sbin/nats-server", nil
	}
	return "", errors.New("cannot find the nats-server binary: install it (`make deps`, or apt-get install nats-server), or point IOTWATCH_NATS_SERVER at one")
}

// StartProcess starts nats-server with o on 127.0.0.1 (the command line's
// address and port override the file's listen) and returns once it accepts
// connections, or fails with the server's output.
func StartProcess(o ProcessOptions) (*Process, error) {
	bin := o.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	if o.StoreDir == "" {
		return nil, errors.New("cannot start nats-server: no JetStream store directory")
	}
	port := o.Port
	if port == 0 {
		var err error
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", o.StoreDir}
	if o.Config != "" {
		args = append([]string{"-c", o.Config}, args...)
	}
	args = append(args, o.Args...)
	p := &Process{url: "nats://127.0.0.1:" + strconv.Itoa(port), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), o.Env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %q: %w", bin, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(readyTimeout)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("cannot start %q %q: it exited (%v): %s", bin, args, p.err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("cannot start %q %q: not listening after %s: %s", bin, args, readyTimeout, p.out.String())
		}
	}
}

// FreePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("cannot pick a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// URL returns the client URL, such as nats://127.0.0.1:43127.
func (p *Process) URL() string { return p.url }

// Output returns what the server has logged so far.
func (p *Process) Output() string { return p.out.String() }

// Stop kills the server (SIGKILL: no clean shutdown, as kill -9 would) and
// waits for it to exit. It is safe to call twice.
func (p *Process) Stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// syncBuffer is a bytes.Buffer safe for the process's writes and our reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
