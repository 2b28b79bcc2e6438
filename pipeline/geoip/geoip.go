// Package geoip enriches events with the country, ASN and coordinates of their
// client IP from a MaxMind-format database (MMDB), for logs whose gateway did
// not provide them.
//
// It reads the record layouts of the common free databases:
//
//   - MaxMind GeoLite2/GeoIP2 Country and City: country.iso_code (else
//     registered_country.iso_code), location.latitude/longitude;
//   - MaxMind GeoLite2 ASN: autonomous_system_number;
//   - ip-location-db (the npm packages @ip-location-db/*-mmdb): country_code,
//     latitude/longitude, autonomous_system_number.
//
// Fields a database does not carry read as unknown. Results are cached per IP in
// a fastcache (a cache is right here: an evicted entry is only looked up again),
// so a lookup of a recently seen IP does not allocate and costs a hash and a copy;
// a miss walks the database's search tree and decodes the record (about a
// microsecond and a few small allocations).
package geoip

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"sync/atomic"

	"github.com/VictoriaMetrics/fastcache"
	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/iotwatch/iotwatch/schemas"
)

// CacheBytes is the size of the IP cache. fastcache rounds anything smaller
// up to 32 MiB; one entry costs about 40 bytes, so it holds ~800k IPs.
const CacheBytes = 32 << 20

// Reader looks up IPs in one MMDB file. It is safe for concurrent use.
type Reader struct {
	path   string
	db     *maxminddb.Reader
	cache  *fastcache.Cache
	hits   atomic.Uint64
	misses atomic.Uint64
}

// Open opens the MMDB file at path (memory-mapped). A file without valid
// MMDB metadata is an error; damage deeper in the file shows as lookups that
// find nothing.
func Open(path string) (*Reader, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot open GeoIP database %q: %w", path, err)
	}
	return &Reader{path: path, db: db, cache: fastcache.New(CacheBytes)}, nil
}

// Close releases the database and the cache. The Reader must not be used after.
func (r *Reader) Close() error {
	r.cache.Reset()
	if err := r.db.Close(); err != nil {
		return fmt.Errorf("cannot close GeoIP database %q: %w", r.path, err)
	}
	return nil
}

// Path returns the file the Reader was opened from.
func (r *Reader) Path() string { return r.path }

// DatabaseType returns the database's own description of its contents
// (for example "GeoLite2-City", or "country" for ip-location-db files).
func (r *Reader) DatabaseType() string { return r.db.Metadata.DatabaseType }

// Stats returns the number of lookups answered from the cache and from the database.
func (r *Reader) Stats() (hits, misses uint64) { return r.hits.Load(), r.misses.Load() }

// record is what we read from a database record; see the package doc.
type record struct {
	CountryCode string `maxminddb:"country_code"`
	Country     struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
	Location struct {
		Latitude  float64 `maxminddb:"latitude"`
		Longitude float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
	Latitude  float64 `maxminddb:"latitude"`
	Longitude float64 `maxminddb:"longitude"`
	ASN       uint64  `maxminddb:"autonomous_system_number"`
}

// Cached values are 16 bytes: country (2), flags (1), unused (1), ASN (4),
// latitude and longitude (float32 bits, 4 each).
const (
	valSize   = 16
	flagFound = 1
)

// Lookup returns what the database knows about ip. ok is false when the IP is
// invalid or not in the database (private ranges, unallocated space) or the
// record cannot be decoded; then the other results are zero. A zero country,
// ASN or (0, 0) coordinates mean the database does not say. An IPv4-mapped IPv6
// address is looked up as IPv4. Lookup does not allocate when ip is in the cache.
func (r *Reader) Lookup(ip netip.Addr) (country schemas.Country, asn uint32, lat, lon float32, ok bool) {
	if !ip.IsValid() {
		return
	}
	ip = ip.Unmap().WithZone("")
	key := ip.As16()
	var buf [valSize]byte
	v, hit := r.cache.HasGet(buf[:0], key[:])
	if !hit || len(v) != valSize {
		r.misses.Add(1)
		v = r.resolve(ip, buf[:0])
		r.cache.Set(key[:], v)
	} else {
		r.hits.Add(1)
	}
	if v[2]&flagFound == 0 {
		return
	}
	country = schemas.Country{v[0], v[1]}
	asn = binary.LittleEndian.Uint32(v[4:])
	lat = math.Float32frombits(binary.LittleEndian.Uint32(v[8:]))
	lon = math.Float32frombits(binary.LittleEndian.Uint32(v[12:]))
	return country, asn, lat, lon, true
}

// resolve looks ip up in the database and appends its cache value to dst.
func (r *Reader) resolve(ip netip.Addr, dst []byte) []byte {
	var v [valSize]byte
	res := r.db.Lookup(ip)
	var rec record
	if res.Err() != nil || !res.Found() || res.Decode(&rec) != nil {
		return append(dst, v[:]...)
	}
	v[2] = flagFound
	c := rec.Country.ISOCode
	if c == "" {
		c = rec.CountryCode
	}
	if c == "" {
		c = rec.RegisteredCountry.ISOCode
	}
	if cc, ok := parseCountry(c); ok {
		v[0], v[1] = cc[0], cc[1]
	}
	if rec.ASN <= math.MaxUint32 {
		binary.LittleEndian.PutUint32(v[4:], uint32(rec.ASN))
	}
	lat, lon := rec.Location.Latitude, rec.Location.Longitude
	if lat == 0 && lon == 0 {
		lat, lon = rec.Latitude, rec.Longitude
	}
	if lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180 {
		binary.LittleEndian.PutUint32(v[8:], math.Float32bits(float32(lat)))
		binary.LittleEndian.PutUint32(v[12:], math.Float32bits(float32(lon)))
	}
	return append(dst, v[:]...)
}

// parseCountry accepts a two-letter code in either case and returns it upper-cased.
func parseCountry(s string) (schemas.Country, bool) {
	if len(s) != 2 {
		return schemas.Country{}, false
	}
	var c schemas.Country
	for i := range 2 {
		b := s[i]
		if b >= 'a' && b <= 'z' {
			b -= 'a' - 'A'
		}
		if b < 'A' || b > 'Z' {
			return schemas.Country{}, false
		}
		c[i] = b
	}
	return c, true
}

// Enrich fills ev's Country, ASN and coordinates from the database, each only
// when the log did not provide it. Coordinates are filled only when the
// database's country agrees with the event's (or the event had none), so that
// a gateway's country and the database's coordinates never contradict each
// other. Enrich does not allocate when ev.ClientIP is in the cache, and does
// nothing when the event already has all three or has no client IP.
func (r *Reader) Enrich(ev *schemas.Event) {
	hasLoc := ev.Lat != 0 || ev.Lon != 0
	if ev.Country.Known() && ev.ASN != 0 && hasLoc {
		return
	}
	country, asn, lat, lon, ok := r.Lookup(ev.ClientIP)
	if !ok {
		return
	}
	if !ev.Country.Known() {
		ev.Country = country
	}
	if ev.ASN == 0 {
		ev.ASN = asn
	}
	if !hasLoc && country.Known() && country == ev.Country {
		ev.Lat, ev.Lon = lat, lon
	}
}

// ASOrg returns the name of ip's autonomous system in the database
// (autonomous_system_organization), or "" when it does not say. It is not
// cached and allocates: for explanations (an AS's alert), not per event.
func (r *Reader) ASOrg(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	var rec struct {
		Org string `maxminddb:"autonomous_system_organization"`
	}
	res := r.db.Lookup(ip.Unmap().WithZone(""))
	if res.Err() != nil || !res.Found() || res.Decode(&rec) != nil {
		return ""
	}
	return rec.Org
}
