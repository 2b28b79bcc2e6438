package sink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

var chTestFlags = map[string]string{
	CHSettingDSN: "--clickhouse", CHSettingUser: "--clickhouse-user", CHSettingPassword: "--clickhouse-password",
	CHSettingTLS: "--clickhouse-tls", CHSettingCA: "--clickhouse-ca", CHSettingCert: "--clickhouse-cert", CHSettingKey: "--clickhouse-key",
}

func chFlag(k string) string { return chTestFlags[k] }

// writeSelfSigned writes a self-signed certificate (usable as a CA and as a
// client certificate) and its key as PEM files in dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "iotwatch test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestClickHouseSecurityConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir)
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() *clickhouse.Options {
		o, err := clickhouse.ParseDSN("clickhouse://dsnuser:dsnpw@127.0.0.1:9000/default")
		if err != nil {
			t.Fatal(err)
		}
		return o
	}

	// Nothing set: the DSN's credentials, no TLS.
	o := base()
	if err := (ClickHouseConfig{}).applySecurity(o); err != nil || o.Auth.Username != "dsnuser" || o.Auth.Password != "dsnpw" || o.TLS != nil {
		t.Fatalf("zero config changed the DSN's options: err %v, auth %q/%q, TLS %v", err, o.Auth.Username, o.Auth.Password, o.TLS)
	}
	// User and password override the DSN's; a password file beats Password.
	o = base()
	if err := (ClickHouseConfig{Username: "u", Password: "p"}).applySecurity(o); err != nil || o.Auth.Username != "u" || o.Auth.Password != "p" {
		t.Fatalf("err %v, auth %q/%q; want u/p", err, o.Auth.Username, o.Auth.Password)
	}
	o = base()
	if err := (ClickHouseConfig{Password: "p", PasswordFile: pwFile}).applySecurity(o); err != nil || o.Auth.Password != "from-file-pw" {
		t.Fatalf("err %v, password %q; want the file's, without newline", err, o.Auth.Password)
	}
	// TLS from files.
	o = base()
	cfg := ClickHouseConfig{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "ch.example"}
	if err := cfg.applySecurity(o); err != nil {
		t.Fatal(err)
	}
	if o.TLS == nil || o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 || o.TLS.ServerName != "ch.example" || o.TLS.InsecureSkipVerify {
		t.Fatalf("TLS config %+v; want the CA, one client certificate, server name ch.example, verification on", o.TLS)
	}
	o = base()
	if err := (ClickHouseConfig{TLS: true}).applySecurity(o); err != nil || o.TLS == nil || o.TLS.RootCAs != nil {
		t.Fatalf("TLS alone: err %v, config %+v; want TLS with the system roots", err, o.TLS)
	}

	// Problems name the flag.
	for _, c := range []struct {
		cfg  ClickHouseConfig
		want string
	}{
		{ClickHouseConfig{PasswordFile: filepath.Join(dir, "missing")}, "--clickhouse-password"},
		{ClickHouseConfig{CAFile: filepath.Join(dir, "missing")}, "--clickhouse-ca"},
		{ClickHouseConfig{CAFile: key}, "--clickhouse-ca"},
		{ClickHouseConfig{CertFile: cert}, "--clickhouse-cert/--clickhouse-key"},
		{ClickHouseConfig{CertFile: cert, KeyFile: pwFile}, "--clickhouse-cert/--clickhouse-key"},
	} {
		c.cfg.SettingName = chFlag
		err := c.cfg.applySecurity(base())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %+v: error %v; want one naming %s", c.cfg, err, c.want)
		}
	}
}

// A refused password fails at once, names the flags and never shows the password.
func TestClickHouseWrongPassword(t *testing.T) {
	srv := testClickHouse(t)
	const password = "not-the-Password-7731"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: srv.DSN(), Username: "default", Password: password, SettingName: chFlag})
	if err == nil {
		t.Fatal("connected with a wrong password")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "--clickhouse-user/--clickhouse-password") {
		t.Errorf("error %q does not name --clickhouse-user/--clickhouse-password", err)
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("error %q contains the password", err)
	}
}

// TLS to the plain native port fails at once and says which settings to check.
func TestClickHouseTLSToPlainPort(t *testing.T) {
	srv := testClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := OpenClickHouse(ctx, ClickHouseConfig{DSN: srv.DSN(), TLS: true, SettingName: chFlag})
	if err == nil {
		t.Fatal("TLS to a plain port succeeded")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "--clickhouse-tls") {
		t.Errorf("error %q does not name --clickhouse-tls", err)
	}
}
