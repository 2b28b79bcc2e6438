package formats

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestRealNginx runs a real NGINX with deploy/nginx/iotwatch-log-format.conf
// and the default combined format, sends requests, and decodes what it wrote.
// A missing nginx is a failure, not a skip: `make deps` installs it.
func TestRealNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err2 := os.Stat("/usr/sbin/nginx"); err2 != nil {
			t.Fatal("nginx is not installed: run `make deps` (Debian: apt-get install nginx)")
		}
		bin = "/usr/sbin/nginx"
	}
	formatConf, err := filepath.Abs("../../deploy/nginx/iotwatch-log-format.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events {}
http {
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  include %[2]s;
  server {
    listen %[3]s;
    access_log %[1]s/iotwatch.log iotwatch;
    access_log %[1]s/combined.log combined;
    location / { return 200 "ok\n"; }
  }
}
`, dir, formatConf, addr)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "nginx.conf"), "-p", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(10 * time.Second)
	send := func(method, path string, hdr ...string) {
		t.Helper()
		for {
			req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader("x"))
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("cannot reach nginx: %v (%s)", err, stderr.String())
			}
			time.Sleep(20 * time.Millisecond) // nginx still starting: poll the port
		}
	}
	send("POST", "/v1/devices/lock-7/unlock?n=1", "User-Agent", "acme-lock/2.4.1 (esp32)", "X-Device-Id", "lock-7", "CF-IPCountry", "DE")
	send("GET", "/v1/devices/dev9/state", "Authorization", "Basic ZGV2OTpwdw==") // dev9:pw
	send("GET", `/a"b`)

	read := func(name string) [][]byte {
		for {
			b, _ := os.ReadFile(filepath.Join(dir, name))
			if recs := Records("", nil, b); len(recs) == 3 {
				return recs
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want 3 lines, have %q", name, b)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	check := func(format string, o Options, wantDevices ...string) {
		t.Helper()
		d, err := New(format, o)
		if err != nil {
			t.Fatal(err)
		}
		var ev schemas.Event
		for i, rec := range read(map[string]string{"nginx": "combined.log", "nginx-json": "iotwatch.log"}[format]) {
			if err := d.Decode(rec, 1, uint32(i), time.Now().UnixNano(), &ev); err != nil {
				t.Fatalf("%s line %d: %v\n%s", format, i, err, rec)
			}
			if string(ev.Device) != wantDevices[i] || ev.ClientIP.String() != "127.0.0.1" || ev.Status != 200 {
				t.Errorf("%s line %d: %s", format, i, render(&ev))
			}
			if i == 0 && string(ev.Command) != "POST /v1/devices/{id}/unlock" {
				t.Errorf("%s line 0: command %q", format, ev.Command)
			}
			if i == 0 && format == "nginx-json" && (ev.Country.String() != "DE" || ev.IDMethod != schemas.IDToken) {
				t.Errorf("nginx-json line 0: country/identity from headers missing: %s", render(&ev))
			}
		}
	}
	check("nginx", Options{}, "127.0.0.1", "dev9", "127.0.0.1")
	check("nginx-json", Options{Identity: "header:X-Device-Id", CountryField: "CF-IPCountry"}, "lock-7", "127.0.0.1", "127.0.0.1")
}
