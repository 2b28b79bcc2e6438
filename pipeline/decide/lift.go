package decide

import (
	"net/netip"
	"time"

	"github.com/iotwatch/iotwatch/schemas"
)

// Covers reports whether the allowlist covers an active decision's scope and
// value: a device, api_key, mqtt_username or mqtt_client_id scope when the
// value is an allowlisted name; an ip or cidr scope when an allowlisted address or CIDR contains the value's address
// or, for a CIDR value, the whole of it. A tenant scope is never covered (the
// allowlist names devices, keys and addresses, not tenants), and neither is a
// CIDR block that only overlaps an allowlisted range.
func (a *Allowlist) Covers(scope, value string) bool {
	if a == nil {
		return false
	}
	switch scope {
	case schemas.ScopeDevice, schemas.ScopeAPIKey, schemas.ScopeMQTTUsername, schemas.ScopeMQTTClientID:
		return value != "" && a.names[value]
	case schemas.ScopeIP, schemas.ScopeCIDR:
		p, ok := ipValue(value)
		if !ok {
			return false
		}
		for _, ap := range a.prefixes {
			if ap.Addr().Is4() == p.Addr().Is4() && ap.Bits() <= p.Bits() && ap.Contains(p.Addr()) {
				return true
			}
		}
	}
	return false
}

// ipValue parses an ip-scope value: an address (a full-length prefix) or a CIDR.
func ipValue(v string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), true
	}
	ip, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), true
}

// Lifts returns an unblock decision for every decision of active (the
// active set, as read from the KV bucket of active blocks) that is a block or
// throttle, not a dry run, not expired at now, and covered by allow (see
// Allowlist.Covers), in the order of active. It is pure: the same arguments
// give the same decisions.
//
// An unblock names the decision it lifts: same scope, value, tenant, device
// and alert id; CreatedAt now; no expiry; reason schemas.ReasonAllowlisted;
// issuer issuer. Its ID is schemas.UnblockID of the lifted decision's ID: it
// names the decision it lifts (enforcement points check that, see
// schemas.Lifts), and lifting the same block twice (a retry after a failure)
// publishes one message. The unblocks are unsigned: the publisher signs them.
func Lifts(allow *Allowlist, active []schemas.Decision, issuer string, now time.Time) []schemas.Decision {
	var out []schemas.Decision
	for i := range active {
		d := &active[i]
		if d.Action != schemas.ActionBlock && d.Action != schemas.ActionThrottle || d.DryRun {
			continue
		}
		if !d.ExpiresAt.IsZero() && !d.ExpiresAt.After(now) {
			continue // no longer enforced: nothing to lift
		}
		if !allow.Covers(d.Scope, d.Value) {
			continue
		}
		out = append(out, schemas.Decision{
			ID:        schemas.UnblockID(d.ID),
			Action:    schemas.ActionUnblock,
			Scope:     d.Scope,
			Value:     d.Value,
			Tenant:    d.Tenant,
			Device:    d.Device,
			CreatedAt: now,
			Reason:    schemas.ReasonAllowlisted,
			AlertID:   d.AlertID,
			Issuer:    issuer,
			SchemaV:   schemas.SchemaVersion,
		})
	}
	return out
}
