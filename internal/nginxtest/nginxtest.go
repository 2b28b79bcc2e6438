// Package nginxtest runs a real NGINX (the Debian package) for tests: the
// shipped deploy/nginx-auth site in front of an upstream, asking a forward-auth
// endpoint before each request. A missing nginx fails the test, naming the
// fix; it never skips.
package nginxtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Find returns the path of the nginx binary, failing t when there is none.
func Find(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	t.Fatal("nginx is not installed: run `make deps` (Debian: apt-get install nginx)")
	return ""
}

// Options say where NGINX runs and what it fronts.
type Options struct {
	// Deploy is the repository's deploy directory (nginx-auth's site, nginx's
	// log format).
	Deploy string
	// Dir holds the configuration, the pid and the logs.
	Dir string
	// AuthAddr is the forward-auth endpoint's host:port.
	AuthAddr string
	// Upstream is the host:port requests are proxied to; empty for an NGINX
	// server of its own that answers 200 "ok".
	Upstream string
	// AccessLog writes Dir/access.log in deploy/nginx's iotwatch JSON format.
	AccessLog bool
	// LogAPIKey adds "http_x_api_key":"$http_x_api_key" to that format, as
	// deploy/nginx's format file tells operators whose devices authenticate
	// with an API key header to do (the pipeline keeps only its keyed hash).
	LogAPIKey bool
}

// Start runs nginx (from Find) in the foreground and returns its address once
// it listens; it is killed when the test ends (and with the test process).
func Start(t testing.TB, bin string, o Options) string {
	t.Helper()
	site, err := os.ReadFile(filepath.Join(o.Deploy, "nginx-auth", "iotwatch-auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	addr, upstream := freeAddr(t), o.Upstream
	var http strings.Builder
	if o.AccessLog {
		format, err := filepath.Abs(filepath.Join(o.Deploy, "nginx", "iotwatch-log-format.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if o.LogAPIKey {
			b, err := os.ReadFile(format)
			if err != nil {
				t.Fatal(err)
			}
			const after = `'"http_x_device_id":"$http_x_device_id",'`
			withKey := strings.Replace(string(b), after, after+"\n    '\"http_x_api_key\":\"$http_x_api_key\",'", 1)
			if withKey == string(b) {
				t.Fatalf("deploy/nginx/iotwatch-log-format.conf changed: no %s line to add the API key after", after)
			}
			format = filepath.Join(o.Dir, "iotwatch-log-format.conf")
			if err := os.WriteFile(format, []byte(withKey), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&http, "  include %s;\n  access_log %s/access.log iotwatch;\n", format, o.Dir)
	} else {
		http.WriteString("  access_log off;\n")
	}
	if upstream == "" {
		upstream = freeAddr(t)
		fmt.Fprintf(&http, "  server {\n    listen %s;\n    access_log off;\n    location / { return 200 \"ok\\n\"; }\n  }\n", upstream)
	}
	conf := strings.NewReplacer("127.0.0.1:9181", o.AuthAddr, "127.0.0.1:8081", upstream,
		"listen 8080;", "listen "+addr+";").Replace(string(site))
	if conf == string(site) {
		t.Fatal("deploy/nginx-auth/iotwatch-auth.conf changed: the test's replacements no longer apply")
	}
	if err := os.WriteFile(filepath.Join(o.Dir, "site.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
%[2]s  include %[1]s/site.conf;
}
`, o.Dir, http.String())
	if err := os.WriteFile(filepath.Join(o.Dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-e", filepath.Join(o.Dir, "error.log"), "-p", o.Dir, "-c", filepath.Join(o.Dir, "nginx.conf"), "-g", "daemon off; master_process off;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(o.Dir, "error.log"))
			t.Fatalf("nginx exited at start: %s%s", out.Bytes(), b)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s after 10s", addr)
		}
		time.Sleep(5 * time.Millisecond) // polling the port with a deadline
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
