package pipetest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildOnce holds the one build of cmd/iotwatch of a test binary.
var buildOnce struct {
	sync.Once
	bin string
	err error
}

// BuildIotwatch builds cmd/iotwatch once per test binary, into a temporary
// directory, from the module the test runs in, and returns the executable.
// A failed build fails t with the compiler's output.
func BuildIotwatch(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		out, err := exec.Command(goBin, "env", "GOMOD").Output()
		mod := strings.TrimSpace(string(out))
		if err != nil || mod == "" || mod == os.DevNull {
			buildOnce.err = fmt.Errorf("cannot find the module of cmd/iotwatch (go env GOMOD: %q, %v)", mod, err)
			return
		}
		dir, err := os.MkdirTemp("", "iotwatch-bin-")
		if err != nil {
			buildOnce.err = fmt.Errorf("cannot create a directory for the build: %w", err)
			return
		}
		bin := filepath.Join(dir, "iotwatch")
		cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/iotwatch")
		cmd.Dir = filepath.Dir(mod)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("cannot build cmd/iotwatch: %w\n%s", err, out)
			return
		}
		buildOnce.bin = bin
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.bin
}

// Proc is an iotwatch process a test started (StartProc): its output is
// kept, and logged when the test fails.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *LockedBuffer
	done chan struct{}
	err  error // the exit, valid once done is closed
}

// StartProc starts bin with args as process name; t's cleanup kills it if
// it still runs, and logs its output if t failed.
func StartProc(t testing.TB, bin, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, out: &LockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.Output())
		}
	})
	return p
}

// Output returns what the process has written so far.
func (p *Proc) Output() string { return p.out.String() }

// Exited returns the process's exit error and true once it has exited.
func (p *Proc) Exited() (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	default:
		return nil, false
	}
}

// Kill kills the process with SIGKILL (as kill -9: no drain, no ack, no
// checkpoint) and waits for it to exit. It is safe to call twice.
func (p *Proc) Kill() {
	if _, exited := p.Exited(); !exited {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// Stop ends the process as an operator does (SIGTERM) and fails t unless it
// exits cleanly within hang (a bound on a hang, not a speed).
func (p *Proc) Stop(t testing.TB, hang time.Duration) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("cannot stop %s: %v", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(hang):
		t.Fatalf("%s did not stop within %s", p.Name, hang)
	}
	if p.err != nil {
		t.Fatalf("%s: %v\n%s", p.Name, p.err, p.Output())
	}
}

// Metric returns the sum of the samples of metric name (with any labels
// matching labels, a substring such as `change="acquired"`) on the
// Prometheus text page at url, or -1 while it cannot be read or has none.
func Metric(url, name, labels string) float64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	sum, found := 0.0, false
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		if labels != "" && !strings.Contains(l, labels) {
			continue
		}
		v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
		if err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// LockedBuffer is a bytes.Buffer safe for the writes of a process (or of
// a command's goroutine) and the test's reads.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
