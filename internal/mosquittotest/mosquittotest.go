// Package mosquittotest starts a private Mosquitto 2 broker with the
// dynamic-security plugin for tests, like net/http/httptest does for HTTP
// servers. It needs the Debian packages mosquitto and mosquitto-clients
// (`make deps` installs them); a missing program fails the test.
package mosquittotest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/mqtt"
)

// Admin credentials of the brokers Start creates.
const (
	AdminUser     = "iotwatch-admin"
	AdminPassword = "admin-pw-for-tests"
	DeviceRole    = "device"
)

// Broker is a running private Mosquitto.
type Broker struct {
	Addr string // 127.0.0.1:port
	Host string
	Port int
	Dir  string // config, dynamic-security JSON and log
}

// Tool returns the path of a Mosquitto program (mosquitto, mosquitto_pub,
// mosquitto_sub, mosquitto_ctrl), or fails the test with an install hint.
func Tool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	t.Fatalf("cannot find %q: install the Debian packages mosquitto and mosquitto-clients (make deps)", name)
	return ""
}

// PluginPath returns the dynamic-security plugin's path, or fails the test.
func PluginPath(t testing.TB) string {
	t.Helper()
	for _, pat := range []string{"/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so", "/usr/lib*/mosquitto/mosquitto_dynamic_security.so"} {
		if m, _ := filepath.Glob(pat); len(m) > 0 {
			return m[0]
		}
	}
	t.Fatalf("cannot find mosquitto_dynamic_security.so: install the Debian package mosquitto (make deps)")
	return ""
}

// Start runs a private broker on a free port of 127.0.0.1 with anonymous
// access off and the dynamic-security plugin, whose admin is AdminUser, and
// a role DeviceRole that may publish and subscribe to every topic. The broker is
// killed when the test ends (and when the test binary dies).
func Start(t testing.TB) *Broker {
	t.Helper()
	bin, ctrl, plugin := Tool(t, "mosquitto"), Tool(t, "mosquitto_ctrl"), PluginPath(t)
	dir := t.TempDir()
	dynsec := filepath.Join(dir, "dynamic-security.json")
	if out, err := exec.Command(ctrl, "dynsec", "init", dynsec, AdminUser, AdminPassword).CombinedOutput(); err != nil {
		t.Fatalf("cannot initialise dynamic security: %v: %s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	b := &Broker{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Host: "127.0.0.1", Port: port, Dir: dir}
	conf := fmt.Sprintf(`per_listener_settings true
persistence false
log_dest file %s
log_type all
listener %d 127.0.0.1
allow_anonymous false
plugin %s
plugin_opt_config_file %s
`, filepath.Join(dir, "mosquitto.log"), port, plugin, dynsec)
	if os.Getuid() == 0 {
		conf = "user root\n" + conf // else Mosquitto drops to user mosquitto, who cannot write dir
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, _ := os.Create(filepath.Join(dir, "stderr"))
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); stderr.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := mqtt.Dial(ctx, mqtt.Options{Addr: b.Addr, ClientID: "mosquittotest-probe", Username: AdminUser, Password: AdminPassword})
		cancel()
		if err == nil {
			c.Close()
			break
		}
		select {
		case werr := <-exited:
			t.Fatalf("mosquitto exited at start: %v\n%s", werr, b.Logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not accept the admin in 10 s: %v\n%s", err, b.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Ctrl(t, "dynsec", "createRole", DeviceRole)
	b.Ctrl(t, "dynsec", "addRoleACL", DeviceRole, "publishClientSend", "#", "allow", "5")
	b.Ctrl(t, "dynsec", "addRoleACL", DeviceRole, "subscribePattern", "#", "allow", "5")
	return b
}

// Logs returns the broker's output and log file, for test failures.
func (b *Broker) Logs() string {
	var sb strings.Builder
	for _, f := range []string{"stderr", "mosquitto.log"} {
		data, _ := os.ReadFile(filepath.Join(b.Dir, f))
		sb.Write(data)
	}
	return sb.String()
}

// Ctrl runs mosquitto_ctrl against the broker as the admin, or fails the test.
func (b *Broker) Ctrl(t testing.TB, args ...string) string {
	t.Helper()
	all := append([]string{"-h", b.Host, "-p", strconv.Itoa(b.Port), "-u", AdminUser, "-P", AdminPassword}, args...)
	out, err := exec.Command(Tool(t, "mosquitto_ctrl"), all...).CombinedOutput()
	if err != nil || strings.Contains(string(out), "Error") {
		t.Fatalf("mosquitto_ctrl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// AddClient creates a dynamic-security client (username and password) with
// the role DeviceRole.
func (b *Broker) AddClient(t testing.TB, username, password string) {
	t.Helper()
	b.Ctrl(t, "dynsec", "createClient", username, "-p", password)
	b.Ctrl(t, "dynsec", "addClientRole", username, DeviceRole)
}

// Pub runs mosquitto_pub once as username and returns its combined output
// and error (a non-nil error when the broker refused the connection).
func (b *Broker) Pub(t testing.TB, username, password, topic, msg string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, Tool(t, "mosquitto_pub"), "-h", b.Host, "-p", strconv.Itoa(b.Port), "-u", username, "-P", password,
		"-i", username+"-pub", "-t", topic, "-m", msg, "-q", "1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err == nil && strings.Contains(string(out), "rror") {
		err = errors.New("mosquitto_pub reported an error")
	}
	return string(out), err
}

// ProcessesMentioning returns the pids whose command line contains s (Linux
// /proc; none elsewhere), for a test's check that the broker and the
// processes it started around it (given a directory they name) are gone.
func ProcessesMentioning(s string) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmd, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err == nil && strings.Contains(string(cmd), s) {
			pids = append(pids, filepath.Base(d))
		}
	}
	return pids
}
