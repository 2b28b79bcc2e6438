package decide

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestValidateFieldErrors: Validate's error is a *FieldError naming the field
// and, for a comparison, the other field; its message is the documented one,
// and Problem names the other field as its caller asks.
func TestValidateFieldErrors(t *testing.T) {
	flag := func(key string) string { return "--" + strings.ReplaceAll(key, "_", "-") }
	f := func(mod func(*Config), field, msg, problem string) {
		t.Helper()
		c := DefaultConfig()
		mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("Validate: %v, want a *FieldError", err)
		}
		if fe.Field != field || err.Error() != "cannot use decide config: "+msg || fe.Problem(flag) != problem {
			t.Errorf("Validate: field %q, %q, problem %q; want %q, %q, %q", fe.Field, err, fe.Problem(flag), field, "cannot use decide config: "+msg, problem)
		}
	}
	f(func(c *Config) { c.AlertThreshold = 1.5 }, "alert_threshold", "alert_threshold 1.5 must be in (0,1]", "1.5 must be in (0,1]")
	f(func(c *Config) { c.BlockThreshold = 0 }, "block_threshold", "block_threshold 0 must be in (0,1]", "0 must be in (0,1]")
	f(func(c *Config) { c.AlertThreshold = 0.95 }, "block_threshold", "block_threshold 0.9 must be >= alert_threshold 0.95", "0.9 must be >= --alert-threshold 0.95")
	f(func(c *Config) { c.Cooldown = -time.Minute }, "cooldown", "cooldown -1m0s must be >= 0", "-1m0s must be >= 0")
	f(func(c *Config) { c.BlockTTL = 0 }, "block_ttl", "block_ttl 0s must be > 0", "0s must be > 0")
	f(func(c *Config) { c.MaxBlockTTL = time.Minute }, "max_block_ttl", "max_block_ttl 1m0s must be >= block_ttl 15m0s", "1m0s must be >= --block-ttl 15m0s")
	f(func(c *Config) { c.MaxBlocksPerMinute = -1 }, "max_blocks_per_minute", "max_blocks_per_minute -1 must be >= 0", "-1 must be >= 0")
	f(func(c *Config) { c.Scope = "galaxy" }, "scope", `scope "galaxy" must be auto, device, api_key, ip or tenant`, `"galaxy" must be auto, device, api_key, ip or tenant`)
	_, perr := netip.ParsePrefix("10.0.0.0/77")
	f(func(c *Config) { c.Allowlist = []string{"10.0.0.0/77"} }, "allowlist",
		`allowlist: cannot parse CIDR "10.0.0.0/77": `+perr.Error(), `cannot parse CIDR "10.0.0.0/77": `+perr.Error())
}
