package schemas

// Reason codes of the geo detector beyond ReasonNewCountry.
const (
	ReasonImpossibleTravel = "impossible_travel"  // two consecutive locations too far apart for a plane in the time between them
	ReasonASNChange        = "asn_change"         // a network (ASN, the carrier of a cellular device) other than the one the device steadily used
	ReasonRareFleetCountry = "rare_fleet_country" // a young device in a country no (or almost no) device of its class uses
)
