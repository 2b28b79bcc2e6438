package sim

import "net/netip"

// Network kinds.
const (
	KindResidential = "residential"
	KindMobile      = "mobile"
	KindHosting     = "hosting"
)

// Network is an address range the simulator draws client IPs from, with what a
// GeoIP database (country, ASN, city coordinates) would say about it. The
// ranges and their assignments are made up for the simulation, though they look
// like real allocations: build a test MMDB from Networks to enrich raw logs the
// way a gateway with GeoIP would (a City-level one with Lat and Lon).
type Network struct {
	Prefix  netip.Prefix
	Country string // ISO 3166-1 alpha-2
	ASN     uint32
	Org     string
	Kind    string // KindResidential, KindMobile or KindHosting
	// Lat and Lon (degrees) are where a city-level database would place the
	// range: a big city for fixed and hosting ranges; for mobile ranges the
	// border region the simulated vehicles drive in (Saarbrücken/Strasbourg,
	// Detroit/Toronto, Foz do Iguaçu/Posadas), since a trip abroad switches
	// network between two consecutive requests.
	Lat, Lon float32
}

// country is a home country of devices: its UTC offset (for daily cycles), its
// gateway region and its residential and mobile networks.
type country struct {
	code        string
	utcOffset   int // hours
	region      string
	residential int // index into networks
	mobile      int
	neighbor    string // where a vehicle may drive to ("" if nowhere)
}

var networks = []Network{
	{netip.MustParsePrefix("84.128.0.0/16"), "DE", 3320, "DE fixed broadband", KindResidential, 50.11, 8.68},
	{netip.MustParsePrefix("109.40.0.0/16"), "DE", 3209, "DE mobile", KindMobile, 49.23, 7},
	{netip.MustParsePrefix("90.12.0.0/16"), "FR", 3215, "FR fixed broadband", KindResidential, 48.86, 2.35},
	{netip.MustParsePrefix("37.164.0.0/16"), "FR", 51207, "FR mobile", KindMobile, 48.58, 7.75},
	{netip.MustParsePrefix("73.42.0.0/16"), "US", 7922, "US cable broadband", KindResidential, 39.95, -75.17},
	{netip.MustParsePrefix("174.205.0.0/16"), "US", 6167, "US mobile", KindMobile, 42.33, -83.05},
	{netip.MustParsePrefix("24.48.0.0/16"), "CA", 5769, "CA cable broadband", KindResidential, 43.65, -79.38},
	{netip.MustParsePrefix("70.26.0.0/16"), "CA", 577, "CA mobile", KindMobile, 43.65, -79.38},
	{netip.MustParsePrefix("126.33.0.0/16"), "JP", 17676, "JP fixed broadband", KindResidential, 35.68, 139.69},
	{netip.MustParsePrefix("49.98.0.0/16"), "JP", 9605, "JP mobile", KindMobile, 34.69, 135.5},
	{netip.MustParsePrefix("177.92.0.0/16"), "BR", 28573, "BR cable broadband", KindResidential, -23.55, -46.63},
	{netip.MustParsePrefix("179.241.0.0/16"), "BR", 26599, "BR mobile", KindMobile, -25.55, -54.59},
	{netip.MustParsePrefix("181.45.0.0/16"), "AR", 7303, "AR fixed broadband", KindResidential, -34.6, -58.38},
	{netip.MustParsePrefix("186.122.0.0/16"), "AR", 22927, "AR mobile", KindMobile, -27.37, -55.9},
	// Where attackers come from: hosting providers and VPS ranges.
	{netip.MustParsePrefix("185.107.56.0/22"), "NL", 43350, "NL hosting", KindHosting, 52.37, 4.9},
	{netip.MustParsePrefix("95.163.208.0/20"), "RU", 49505, "RU hosting", KindHosting, 55.76, 37.62},
	{netip.MustParsePrefix("1.80.0.0/16"), "CN", 4134, "CN backbone", KindHosting, 34.34, 108.94},
	{netip.MustParsePrefix("128.199.0.0/16"), "SG", 14061, "SG cloud", KindHosting, 1.29, 103.85},
	{netip.MustParsePrefix("14.161.0.0/16"), "VN", 45899, "VN backbone", KindHosting, 10.82, 106.63},
	{netip.MustParsePrefix("5.2.64.0/20"), "RO", 9009, "RO hosting", KindHosting, 44.43, 26.1},
	// The field model's (field.go) second broadband provider per country, so
	// that a household, a clone or an attacker can be on another network of
	// the same country.
	{netip.MustParsePrefix("91.64.0.0/16"), "DE", 31334, "DE cable broadband", KindResidential, 52.52, 13.4},
	{netip.MustParsePrefix("176.128.0.0/16"), "FR", 5410, "FR fibre broadband", KindResidential, 45.76, 4.84},
	{netip.MustParsePrefix("98.206.0.0/16"), "US", 7018, "US fibre broadband", KindResidential, 41.88, -87.63},
	{netip.MustParsePrefix("99.224.0.0/16"), "CA", 812, "CA cable broadband 2", KindResidential, 45.5, -73.57},
	{netip.MustParsePrefix("60.112.0.0/16"), "JP", 2516, "JP fibre broadband", KindResidential, 34.69, 135.5},
	{netip.MustParsePrefix("187.36.0.0/16"), "BR", 18881, "BR fibre broadband", KindResidential, -22.91, -43.17},
	{netip.MustParsePrefix("190.16.0.0/16"), "AR", 10318, "AR cable broadband 2", KindResidential, -31.42, -64.18},
	// Hosting inside the devices' own countries (field model): a stolen key
	// used from there is not "abroad".
	{netip.MustParsePrefix("5.9.0.0/16"), "DE", 24940, "DE hosting", KindHosting, 49.45, 11.08},
	{netip.MustParsePrefix("51.15.0.0/16"), "FR", 12876, "FR hosting", KindHosting, 48.86, 2.35},
	{netip.MustParsePrefix("167.99.0.0/16"), "US", 14061, "US cloud", KindHosting, 40.71, -74.01},
	{netip.MustParsePrefix("158.69.0.0/16"), "CA", 16276, "CA hosting", KindHosting, 45.5, -73.57},
	{netip.MustParsePrefix("133.242.0.0/16"), "JP", 9370, "JP hosting", KindHosting, 35.68, 139.69},
	{netip.MustParsePrefix("177.71.128.0/17"), "BR", 16509, "BR cloud", KindHosting, -23.55, -46.63},
	{netip.MustParsePrefix("200.58.96.0/19"), "AR", 27823, "AR hosting", KindHosting, -34.6, -58.38},
}

// hostingNets are the indexes of the hosting networks in networks.
var hostingNets = []int{14, 15, 16, 17, 18, 19}

var countries = []country{
	{"DE", 1, "eu", 0, 1, "FR"},
	{"FR", 1, "eu", 2, 3, "DE"},
	{"US", -5, "us", 4, 5, "CA"},
	{"CA", -5, "us", 6, 7, "US"},
	{"JP", 9, "ap", 8, 9, ""},
	{"BR", -3, "sa", 10, 11, "AR"},
	{"AR", -3, "sa", 12, 13, "BR"},
}

func countryIndex(code string) int {
	for i := range countries {
		if countries[i].code == code {
			return i
		}
	}
	panic("BUG: unknown country " + code)
}

// tenantSpec is a customer of the platform with the countries its devices live in.
type tenantSpec struct {
	name      string
	countries []string
	weight    int
}

var tenants = []tenantSpec{
	{"hausnetz", []string{"DE"}, 25},
	{"maison-connectee", []string{"FR"}, 15},
	{"northstar", []string{"US", "CA"}, 25},
	{"sakura-iot", []string{"JP"}, 15},
	{"casa-viva", []string{"BR", "AR"}, 10},
	{"globex", []string{"DE", "US", "JP"}, 10},
}

// Gateway and broker ids per region: what src_id says.
var (
	gatewayIDs = map[string][2]string{
		"eu": {"kong-eu-1", "kong-eu-2"}, "us": {"kong-us-1", "kong-us-2"},
		"ap": {"kong-ap-1", "kong-ap-1"}, "sa": {"kong-sa-1", "kong-sa-1"},
	}
	brokerIDs = map[string]string{"eu": "emqx-eu-1", "us": "emqx-us-1", "ap": "emqx-ap-1", "sa": "emqx-sa-1"}
)

// Networks returns the address ranges the simulator uses, with their country,
// ASN and kind. The caller may modify the returned slice.
func Networks() []Network {
	return append([]Network(nil), networks...)
}

// hostIP returns an address in the network's prefix chosen by h, avoiding the
// .0 and .255 addresses.
func hostIP(n *Network, h uint64) netip.Addr {
	b := n.Prefix.Addr().As4()
	hostBits := 32 - n.Prefix.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	span := uint32(1) << hostBits
	for {
		off := uint32(h % uint64(span))
		a := v | off
		if last := a & 0xff; last != 0 && last != 255 {
			return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
		}
		h = h*0x9e3779b97f4a7c15 + 1
	}
}
