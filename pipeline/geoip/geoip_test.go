package geoip_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/iotwatch/iotwatch/internal/geoiptest"
	"github.com/iotwatch/iotwatch/pipeline/geoip"
	"github.com/iotwatch/iotwatch/schemas"
)

type network = geoiptest.Network

func writeDB(t testing.TB, dbType string, nets []network) string {
	return geoiptest.Write(t, dbType, nets)
}

// cityDB has MaxMind's City+ASN layout (nested country and location).
func cityDB(t testing.TB) string {
	return writeDB(t, "Test-City", []network{
		{Prefix: "84.128.0.0/16", Record: mmdbtype.Map{
			"country":                  mmdbtype.Map{"iso_code": mmdbtype.String("DE")},
			"location":                 mmdbtype.Map{"latitude": mmdbtype.Float64(52.52), "longitude": mmdbtype.Float64(13.40)},
			"autonomous_system_number": mmdbtype.Uint32(3320),
		}},
		{Prefix: "2400:4050:1::/48", Record: mmdbtype.Map{
			"country":                  mmdbtype.Map{"iso_code": mmdbtype.String("JP")},
			"location":                 mmdbtype.Map{"latitude": mmdbtype.Float64(35.68), "longitude": mmdbtype.Float64(139.69)},
			"autonomous_system_number": mmdbtype.Uint32(17676),
		}},
		// Only a registered country, no location, no ASN.
		{Prefix: "95.163.208.0/20", Record: mmdbtype.Map{
			"registered_country": mmdbtype.Map{"iso_code": mmdbtype.String("RU")},
		}},
	})
}

// flatDB has ip-location-db's layout (country_code only).
func flatDB(t testing.TB) string {
	return writeDB(t, "country", []network{
		{Prefix: "84.128.0.0/10", Record: mmdbtype.Map{"country_code": mmdbtype.String("de")}},
		{Prefix: "73.42.0.0/16", Record: mmdbtype.Map{"country_code": mmdbtype.String("US")}},
		{Prefix: "2a01:cb00:2::/48", Record: mmdbtype.Map{"country_code": mmdbtype.String("FR")}},
	})
}

func open(t testing.TB, path string) *geoip.Reader {
	t.Helper()
	r, err := geoip.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestLookup(t *testing.T) {
	city, flat := open(t, cityDB(t)), open(t, flatDB(t))
	f := func(r *geoip.Reader, ip string, wantCountry string, wantASN uint32, wantLat, wantLon float32, wantOK bool) {
		t.Helper()
		c, asn, lat, lon, ok := r.Lookup(netip.MustParseAddr(ip))
		if c.String() != wantCountry || asn != wantASN || lat != wantLat || lon != wantLon || ok != wantOK {
			t.Errorf("%s: Lookup(%s) = %q %d %v %v %v, want %q %d %v %v %v", r.DatabaseType(), ip,
				c, asn, lat, lon, ok, wantCountry, wantASN, wantLat, wantLon, wantOK)
		}
	}
	for range 2 { // the second round is answered from the cache
		f(city, "84.128.7.9", "DE", 3320, 52.52, 13.40, true)
		f(city, "::ffff:84.128.7.9", "DE", 3320, 52.52, 13.40, true) // IPv4-mapped
		f(city, "2400:4050:1::42", "JP", 17676, 35.68, 139.69, true)
		f(city, "95.163.210.1", "RU", 0, 0, 0, true)
		f(city, "84.129.0.1", "", 0, 0, 0, false)     // not in the database
		f(city, "2a01:cb00:9::1", "", 0, 0, 0, false) // not in the database
		f(city, "10.1.2.3", "", 0, 0, 0, false)       // private
		f(flat, "84.129.0.1", "DE", 0, 0, 0, true)    // lower case in the file
		f(flat, "73.42.1.1", "US", 0, 0, 0, true)
		f(flat, "2a01:cb00:2:3::1", "FR", 0, 0, 0, true)
	}
	if _, _, _, _, ok := city.Lookup(netip.Addr{}); ok {
		t.Errorf("Lookup of the zero Addr: ok")
	}
	hits, misses := city.Stats()
	if misses != 6 || hits != 8 {
		t.Errorf("city cache: %d hits, %d misses; want 8 hits (round 2 and the mapped IPv4), 6 misses", hits, misses)
	}
}

func TestEnrich(t *testing.T) {
	r := open(t, cityDB(t))
	f := func(ip string, country string, asn uint32, lat float32, want string) {
		t.Helper()
		ev := schemas.Event{Country: schemas.Country{}, ASN: asn, Lat: lat}
		if country != "" {
			ev.Country = schemas.Country{country[0], country[1]}
		}
		if ip != "" {
			ev.ClientIP = netip.MustParseAddr(ip)
		}
		r.Enrich(&ev)
		if got := strings.Join([]string{ev.Country.String(), itoa(ev.ASN), ftoa(ev.Lat), ftoa(ev.Lon)}, " "); got != want {
			t.Errorf("Enrich(ip=%s country=%q asn=%d lat=%v) = %q, want %q", ip, country, asn, lat, got, want)
		}
	}
	f("84.128.7.9", "", 0, 0, "DE 3320 52.52 13.4")        // nothing from the log
	f("84.128.7.9", "DE", 64500, 0, "DE 64500 52.52 13.4") // the log's ASN wins
	f("84.128.7.9", "FR", 0, 0, "FR 3320 0 0")             // the log's country wins; no contradicting coordinates
	f("84.128.7.9", "DE", 0, 48.1, "DE 3320 48.1 0")       // the log's coordinates win
	f("84.129.0.1", "", 0, 0, " 0 0 0")                    // unknown IP
	f("", "", 0, 0, " 0 0 0")                              // no client IP
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func ftoa(f float32) string { return strconv.FormatFloat(float64(f), 'g', -1, 32) }

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.mmdb")
	if _, err := geoip.Open(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Open(missing) = %v, want an error naming %q", err, missing)
	}
	corrupt := filepath.Join(dir, "corrupt.mmdb")
	if err := os.WriteFile(corrupt, []byte("this is not an MMDB file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := geoip.Open(corrupt); err == nil || !strings.Contains(err.Error(), corrupt) {
		t.Errorf("Open(corrupt) = %v, want an error naming %q", err, corrupt)
	}
	// A truncated real database: the metadata survives, the tree does not.
	b, err := os.ReadFile(cityDB(t))
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.mmdb")
	cut := append(append([]byte{}, b[:len(b)/3]...), b[len(b)-len(b)/3:]...)
	if err := os.WriteFile(truncated, cut, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := geoip.Open(truncated); err == nil || !strings.Contains(err.Error(), truncated) {
		t.Errorf("Open(truncated) = %v, want an error naming %q", err, truncated)
	}
}

// TestLookupAllocs checks that a cached lookup and Enrich do not allocate.
func TestLookupAllocs(t *testing.T) {
	r := open(t, cityDB(t))
	ip := netip.MustParseAddr("84.128.7.9")
	r.Lookup(ip)
	if n := testing.AllocsPerRun(100, func() { r.Lookup(ip) }); n != 0 {
		t.Errorf("cached Lookup: %v allocs, want 0", n)
	}
	ev := schemas.Event{ClientIP: ip}
	if n := testing.AllocsPerRun(100, func() { ev.Country, ev.ASN, ev.Lat, ev.Lon = schemas.Country{}, 0, 0, 0; r.Enrich(&ev) }); n != 0 {
		t.Errorf("cached Enrich: %v allocs, want 0", n)
	}
}

// TestRealDatabase checks the database `make geoip` fetches, when it is there.
func TestRealDatabase(t *testing.T) {
	path := filepath.Join("..", "..", "var", "geoip", "geo-whois-asn-country.mmdb")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("no %s (run make geoip)", path)
	}
	r := open(t, path)
	for ip, want := range map[string]string{
		"8.8.8.8":              "US", // Google DNS
		"193.0.6.139":          "NL", // RIPE NCC
		"2001:4860:4860::8888": "US", // Google DNS over IPv6
		"10.0.0.1":             "",   // private
	} {
		c, _, _, _, ok := r.Lookup(netip.MustParseAddr(ip))
		if c.String() != want || ok != (want != "") {
			t.Errorf("Lookup(%s) = %q ok=%v, want %q", ip, c, ok, want)
		}
	}
}
