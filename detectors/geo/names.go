package geo

// Name is the geo detector's registered name. It and the reasons below are
// user-facing (findings, alerts, ClickHouse rows, dashboards): renaming one is
// a migration.
const Name = "geo"

// Reasons the geo detector returns.
const (
	ReasonNewCountry       = "new_country"        // a country never seen for this device
	ReasonImpossibleTravel = "impossible_travel"  // two consecutive locations too far apart for a plane in the time between them
	ReasonASNChange        = "asn_change"         // a network (ASN, the carrier of a cellular device) other than the one the device steadily used
	ReasonRareFleetCountry = "rare_fleet_country" // a young device in a country no (or almost no) device of its class uses
)
