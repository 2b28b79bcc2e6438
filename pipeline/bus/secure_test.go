package bus

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/natsserver"
	"github.com/nats-io/nkeys"
)

// testFlags maps setting keys to flag names, as cmd/iotwatch does.
var testFlags = map[string]string{
	SettingURL: "--nats", SettingUser: "--nats-user", SettingPassword: "--nats-password",
	SettingToken: "--nats-token", SettingNkeySeed: "--nats-nkey-seed", SettingCreds: "--nats-creds", SettingInbox: "--nats-inbox-prefix",
	SettingCA: "--nats-ca", SettingCert: "--nats-cert", SettingKey: "--nats-key",
}

func flagName(k string) string { return testFlags[k] }

// testPKI is a throw-away certificate authority with a server certificate for
// 127.0.0.1/localhost and a client certificate, all as PEM files in a test directory.
type testPKI struct {
	dir                 string
	caFile              string // the CA that signed the certificates below
	otherCAFile         string // an unrelated CA
	certFile, keyFile   string // client
	serverCert          tls.Certificate
	pool                *x509.CertPool // holds the CA
	otherCert, otherKey string         // a client certificate from the unrelated CA
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), pool: x509.NewCertPool()}
	caCert, caKey := makeCA(t, "iotwatch test CA")
	p.pool.AddCert(caCert)
	p.caFile = p.writePEM(t, "ca.pem", "CERTIFICATE", caCert.Raw)
	otherCA, otherKey := makeCA(t, "some other CA")
	p.otherCAFile = p.writePEM(t, "other-ca.pem", "CERTIFICATE", otherCA.Raw)

	srvDER, srvKey := makeLeaf(t, caCert, caKey, "nats-server", x509.ExtKeyUsageServerAuth)
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}

	cliDER, cliKey := makeLeaf(t, caCert, caKey, "iotwatch", x509.ExtKeyUsageClientAuth)
	p.certFile = p.writePEM(t, "client.pem", "CERTIFICATE", cliDER)
	p.keyFile = p.writePEM(t, "client-key.pem", "PRIVATE KEY", marshalKey(t, cliKey))
	odDER, odKey := makeLeaf(t, otherCA, otherKey, "intruder", x509.ExtKeyUsageClientAuth)
	p.otherCert = p.writePEM(t, "other.pem", "CERTIFICATE", odDER)
	p.otherKey = p.writePEM(t, "other-key.pem", "PRIVATE KEY", marshalKey(t, odKey))
	return p
}

// serverTLS is the embedded server's TLS configuration; verifyClients makes it
// require client certificates signed by the test CA.
func (p *testPKI) serverTLS(verifyClients bool) *tls.Config {
	c := &tls.Config{Certificates: []tls.Certificate{p.serverCert}, MinVersion: tls.VersionTLS12}
	if verifyClients {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	}
	return c
}

func (p *testPKI) writePEM(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func marshalKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func makeCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func makeLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// newNkeyUser returns a user's public nkey and a file holding its seed.
func newNkeyUser(t *testing.T, dir, name string) (pub, seedFile string, seed []byte) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	if pub, err = kp.PublicKey(); err != nil {
		t.Fatal(err)
	}
	if seed, err = kp.Seed(); err != nil {
		t.Fatal(err)
	}
	seedFile = filepath.Join(dir, name+".nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, seedFile, seed
}

// secureCase is one connection attempt. wantFlags empty means it must succeed;
// otherwise it must fail at once with a *SetupError naming these flags.
type secureCase struct {
	name      string
	opts      ConnectOptions
	wantFlags []string
}

// runSecureCases connects to url with each case's options, logging at debug
// level into a buffer, and checks that no secret appears in any log line or
// error.
func runSecureCases(t *testing.T, url string, cases []secureCase, secrets ...string) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf logBuffer // nats.go logs from its own goroutines
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			o := c.opts
			o.SettingName = flagName
			nc, js, err := ConnectWith(ctx, url, "secure-test", o, log)
			var text string
			if err != nil {
				text = err.Error()
				t.Log(text)
			}
			if len(c.wantFlags) == 0 {
				if err != nil {
					t.Fatalf("cannot connect: %v", err)
				}
				if _, err := js.AccountInfo(ctx); err != nil {
					t.Fatalf("connected, but JetStream does not answer: %v", err)
				}
				nc.Close()
			} else {
				if err == nil {
					nc.Close()
					t.Fatalf("connected; want a refusal naming %v", c.wantFlags)
				}
				var se *SetupError
				if !errors.As(err, &se) {
					t.Fatalf("error %q is not a *SetupError (it was retried or misclassified)", err)
				}
				if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("error %q came after retrying until the deadline; want a fast failure", err)
				}
				for _, f := range c.wantFlags {
					if !strings.Contains(text, f) {
						t.Errorf("error %q does not name %s", text, f)
					}
				}
			}
			for _, s := range secrets {
				if strings.Contains(text, s) {
					t.Errorf("error %q contains a secret", text)
				}
				if strings.Contains(buf.String(), s) {
					t.Errorf("log contains a secret:\n%s", buf.String())
				}
			}
		})
	}
}

func TestConnectTLSAndNkey(t *testing.T) {
	pki := newTestPKI(t)
	pub, seedFile, seed := newNkeyUser(t, pki.dir, "good")
	_, wrongSeedFile, wrongSeed := newNkeyUser(t, pki.dir, "unknown")
	e := startTestServer(t, natsserver.Options{TLS: pki.serverTLS(false), Nkeys: []string{pub}})
	runSecureCases(t, e.URL(), []secureCase{
		{name: "verified server and nkey", opts: ConnectOptions{CAFile: pki.caFile, NkeySeedFile: seedFile}},
		{name: "unknown CA", opts: ConnectOptions{CAFile: pki.otherCAFile, NkeySeedFile: seedFile}, wantFlags: []string{"x509", "--nats-ca"}},
		{name: "system roots", opts: ConnectOptions{NkeySeedFile: seedFile}, wantFlags: []string{"x509", "--nats-ca"}},
		{name: "wrong seed", opts: ConnectOptions{CAFile: pki.caFile, NkeySeedFile: wrongSeedFile}, wantFlags: []string{"authorization violation", "--nats-nkey-seed"}},
		{name: "no credentials", opts: ConnectOptions{CAFile: pki.caFile}, wantFlags: []string{"authorization violation", "--nats-nkey-seed", "--nats-creds"}},
	}, string(seed), string(wrongSeed))
}

func TestConnectUserPassword(t *testing.T) {
	const password = "s3cret-Pa55word-42"
	pki := newTestPKI(t)
	e := startTestServer(t, natsserver.Options{TLS: pki.serverTLS(false), Users: map[string]string{"ingest": password}})
	runSecureCases(t, e.URL(), []secureCase{
		{name: "right password", opts: ConnectOptions{CAFile: pki.caFile, User: "ingest", Password: password}},
		{name: "wrong password", opts: ConnectOptions{CAFile: pki.caFile, User: "ingest", Password: password + "x"}, wantFlags: []string{"authorization violation", "--nats-user/--nats-password"}},
		{name: "unknown user", opts: ConnectOptions{CAFile: pki.caFile, User: "nobody", Password: password}, wantFlags: []string{"--nats-user/--nats-password"}},
	}, password)

	// Credentials in the URL never show either.
	u := strings.Replace(e.URL(), "nats://", "nats://ingest:"+password+"x@", 1)
	runSecureCases(t, u, []secureCase{
		{name: "wrong password in URL", opts: ConnectOptions{CAFile: pki.caFile}, wantFlags: []string{"--nats"}},
	}, password)
}

func TestConnectToken(t *testing.T) {
	const token = "tok-9f8e7d6c5b4a"
	e := startTestServer(t, natsserver.Options{Token: token})
	runSecureCases(t, e.URL(), []secureCase{
		{name: "right token", opts: ConnectOptions{Token: token}},
		{name: "wrong token", opts: ConnectOptions{Token: "tok-wrong-1234"}, wantFlags: []string{"--nats-token"}},
	}, token, "tok-wrong-1234")
}

func TestConnectClientCertificate(t *testing.T) {
	pki := newTestPKI(t)
	e := startTestServer(t, natsserver.Options{TLS: pki.serverTLS(true)})
	runSecureCases(t, e.URL(), []secureCase{
		{name: "with certificate", opts: ConnectOptions{CAFile: pki.caFile, CertFile: pki.certFile, KeyFile: pki.keyFile}},
		{name: "without certificate", opts: ConnectOptions{CAFile: pki.caFile}, wantFlags: []string{"TLS", "--nats-cert"}},
		{name: "certificate from another CA", opts: ConnectOptions{CAFile: pki.caFile, CertFile: pki.otherCert, KeyFile: pki.otherKey}, wantFlags: []string{"TLS", "--nats-cert"}},
	})
}

func TestConnectOptionsChecked(t *testing.T) {
	pki := newTestPKI(t)
	missing := filepath.Join(pki.dir, "missing")
	// No server: every case must fail before dialling.
	runSecureCases(t, "nats://127.0.0.1:1", []secureCase{
		{name: "missing CA", opts: ConnectOptions{CAFile: missing}, wantFlags: []string{"--nats-ca", "no such file"}},
		{name: "CA not PEM", opts: ConnectOptions{CAFile: pki.keyFile}, wantFlags: []string{"--nats-ca", "no PEM certificate"}},
		{name: "cert without key", opts: ConnectOptions{CertFile: pki.certFile}, wantFlags: []string{"--nats-cert/--nats-key"}},
		{name: "key mismatch", opts: ConnectOptions{CertFile: pki.certFile, KeyFile: pki.otherKey}, wantFlags: []string{"--nats-cert/--nats-key"}},
		{name: "missing seed", opts: ConnectOptions{NkeySeedFile: missing}, wantFlags: []string{"--nats-nkey-seed"}},
		{name: "seed not a seed", opts: ConnectOptions{NkeySeedFile: pki.caFile}, wantFlags: []string{"--nats-nkey-seed"}},
		{name: "missing creds", opts: ConnectOptions{CredsFile: missing}, wantFlags: []string{"--nats-creds"}},
		{name: "two methods", opts: ConnectOptions{Token: "t0ken-abc", User: "u", Password: "p4ss-xyz"}, wantFlags: []string{"more than one"}},
		{name: "user without password", opts: ConnectOptions{User: "u"}, wantFlags: []string{"--nats-password"}},
		{name: "wildcard inbox prefix", opts: ConnectOptions{InboxPrefix: "_INBOX.>"}, wantFlags: []string{"--nats-inbox-prefix", "wildcards"}},
		{name: "inbox prefix ending in a dot", opts: ConnectOptions{InboxPrefix: "_INBOX.pipeline."}, wantFlags: []string{"--nats-inbox-prefix"}},
	}, "t0ken-abc", "p4ss-xyz")
}

// An unreachable server is not a setup error: the dial is retried until the
// context is done.
func TestConnectRetriesUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, _, err := ConnectWith(ctx, "nats://127.0.0.1:1", "t", ConnectOptions{Token: "tok"}, nil)
	var se *SetupError
	if err == nil || errors.As(err, &se) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v; want a retry until the deadline", err)
	}
}

func TestRedactURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://u:pw@h:1,tls://tok@h2:2", "nats://u:xxxxx@h:1,tls://xxxxx@h2:2"},
	} {
		if got := RedactURL(c.in); got != c.want {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
