package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/iotwatch/iotwatch/schemas"
)

// TestEnforcerKeys: run's --enforcer-keys takes key files and directories of
// .pub files; without it receipts are unverified; a bad entry names the flag.
func TestEnforcerKeys(t *testing.T) {
	dir := t.TempDir()
	for _, id := range []string{"gw-1", "gw-2"} {
		if code := mainExit([]string{"enforce", "keygen", "--id", id, "--out", filepath.Join(dir, id)}, io.Discard, io.Discard); code != 0 {
			t.Fatalf("keygen %s: exit %d", id, code)
		}
	}
	o := &options{}
	v, err := o.receiptVerifier()
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := v.Check(&schemas.ApplyReceipt{EnforcerID: "gw-1"}); status != schemas.ReceiptUnverified {
		t.Errorf("without keys: %q, want unverified", status)
	}
	o.enforcerKeys = dir
	if v, err = o.receiptVerifier(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gw-1", "gw-2"} {
		_, priv, err := schemas.LoadPrivateKey(filepath.Join(dir, id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		r := schemas.ApplyReceipt{DecisionID: "d-1", EnforcerID: id, Action: schemas.ActionBlock}
		if err := schemas.SignReceipt(&r, id, priv); err != nil {
			t.Fatal(err)
		}
		if status, err := v.Check(&r); status != schemas.ReceiptVerified {
			t.Errorf("%s from the directory: %q %v", id, status, err)
		}
	}
	if status, _ := v.Check(&schemas.ApplyReceipt{EnforcerID: "gw-1"}); status != schemas.ReceiptUnsigned {
		t.Errorf("unsigned with keys: %q", status)
	}
	for _, bad := range []string{filepath.Join(dir, "missing.pub"), t.TempDir()} {
		o.enforcerKeys = filepath.Join(dir, "gw-1.pub") + "," + bad
		if _, err := o.receiptVerifier(); err == nil || !strings.Contains(err.Error(), "enforcer-keys") {
			t.Errorf("--enforcer-keys %s: %v, want an error naming the flag", o.enforcerKeys, err)
		}
	}
}
