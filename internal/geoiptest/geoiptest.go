// Package geoiptest builds small MaxMind-format databases for tests (tests must
// not depend on a downloaded database).
package geoiptest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Network is one row of a test database: a CIDR and its record.
type Network struct {
	Prefix string
	Record mmdbtype.Map
}

// Write builds an MMDB file of dbType in a temporary directory of tb and
// returns its path.
func Write(tb testing.TB, dbType string, nets []Network) string {
	tb.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: dbType, RecordSize: 24})
	if err != nil {
		tb.Fatal(err)
	}
	for _, n := range nets {
		_, ipnet, err := net.ParseCIDR(n.Prefix)
		if err != nil {
			tb.Fatal(err)
		}
		if err := tree.Insert(ipnet, n.Record); err != nil {
			tb.Fatalf("cannot insert %q: %v", n.Prefix, err)
		}
	}
	path := filepath.Join(tb.TempDir(), dbType+".mmdb")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}
