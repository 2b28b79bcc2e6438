package formats

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/nginxtest"
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

// TestRealNginxVerdicts runs a real NGINX with the shipped deploy/nginx-auth
// site and deploy/nginx's log format in front of a forward-auth endpoint that
// answers as `iotwatch enforce http` does (200, or 403 with X-Iotwatch-Action),
// and checks that the lines NGINX writes decode with the enforcement point's
// verdict: allowed, denied by an iotwatch block, and enforcer down (the auth
// subrequest cannot connect: NGINX answers 500).
func TestRealNginxVerdicts(t *testing.T) {
	bin := nginxtest.Find(t)
	auth := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(schemas.HeaderDeviceID) == "lock-blocked" {
			w.Header().Set(schemas.HeaderEnforceAction, schemas.ActionBlock)
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer auth.Close()
	dir := t.TempDir()
	addr := nginxtest.Start(t, bin, nginxtest.Options{Deploy: "../../deploy", Dir: dir,
		AuthAddr: strings.TrimPrefix(auth.URL, "http://"), AccessLog: true})
	client := &http.Client{Timeout: 5 * time.Second}
	send := func(device string, want int) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/v1/devices/"+device+"/unlock", nil)
		req.Header.Set(schemas.HeaderDeviceID, device)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", device, resp.StatusCode, want)
		}
	}
	send("lock-ok", 200)
	send("lock-blocked", 403)
	auth.Close() // the enforcer goes down
	send("lock-down", 500)

	deadline := time.Now().Add(10 * time.Second)
	var recs [][]byte
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "access.log"))
		if recs = Records("", nil, b); len(recs) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access.log: want 3 lines, have %q", b)
		}
		time.Sleep(10 * time.Millisecond) // NGINX writes the line after the response: poll the file
	}
	d, err := New(schemas.FormatNginxJSON, Options{Identity: "header:" + schemas.HeaderDeviceID})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		device  string
		status  uint16
		verdict schemas.Verdict
	}{
		{"lock-ok", 200, schemas.VerdictAllowed},
		{"lock-blocked", 403, schemas.VerdictDenied},
		{"lock-down", 500, schemas.VerdictUnavailable},
	}
	var ev schemas.Event
	for i, w := range want {
		if err := d.Decode(recs[i], 1, uint32(i), time.Now().UnixNano(), &ev); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, recs[i])
		}
		if string(ev.Device) != w.device || ev.Status != w.status || ev.Verdict != w.verdict || ev.Auth == schemas.AuthFailed {
			t.Errorf("line %d: %s, want device %s status %d verdict %s and no auth failure\n%s", i, render(&ev), w.device, w.status, w.verdict, recs[i])
		}
	}
}
