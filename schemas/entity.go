package schemas

// Entity kinds: what an alert (Alert.EntityKind) or an entity record is about
// besides a device. They are user-facing (the alerts table's entity_kind
// column, the JSON field entity_kind): renaming one is a migration.
const (
	// EntityDevice is a device; an alert about a device leaves EntityKind
	// empty, which means the same.
	EntityDevice = "device"
	// EntityIP is one client address ("198.51.100.7").
	EntityIP = "ip"
	// EntityPrefix is the network of a client address: its /24 for IPv4,
	// its /48 for IPv6 ("198.51.100.0/24").
	EntityPrefix = "prefix"
	// EntityAPIKey is an API key or credential (its id as the pipeline stores it).
	EntityAPIKey = "api_key"
	// EntityASN is an autonomous system ("AS64500", or "AS64500
	// (ExampleHost)" when the GeoIP database names it).
	EntityASN = "asn"
	// EntityTenant is a tenant.
	EntityTenant = "tenant"
	// EntityClass is a device class (model) of a tenant: the tenant, a
	// slash and the class ("acme/camera/cx-200"), or the class alone for
	// events without a tenant.
	EntityClass = "class"
)

// ClassEntity returns the text of a tenant's device class as an entity
// (EntityClass): the tenant, a slash and the class, or the class alone for a
// device without a tenant. A class alert's Entity and a device alert's
// Tenant and Class name the same class exactly when ClassEntity of the
// latter is the former (pipeline/incident joins them by it).
func ClassEntity(tenant, class string) string {
	if tenant == "" {
		return class
	}
	return tenant + "/" + class
}

// EntityKinds returns every entity kind, in a fixed order.
func EntityKinds() []string {
	return []string{EntityDevice, EntityIP, EntityPrefix, EntityAPIKey, EntityASN, EntityTenant, EntityClass}
}

// EntityPrefixBits are the prefix lengths of EntityPrefix: an IPv4 address's
// /24, an IPv6 address's /48.
const (
	EntityPrefixBits4 = 24
	EntityPrefixBits6 = 48
)
