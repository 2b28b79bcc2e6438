package bus

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestValidateFieldErrors: Validate's error is a *FieldError naming the field
// and, for a comparison, the other field, which Problem names as its caller
// asks.
func TestValidateFieldErrors(t *testing.T) {
	flag := func(key string) string { return "--" + strings.ReplaceAll(key, ".", "-") }
	f := func(mod func(*StreamsConfig), field, problem string) {
		t.Helper()
		c := DefaultStreamsConfig()
		mod(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("Validate: %v, want a *FieldError", err)
		}
		if fe.Field != field || fe.Problem(flag) != problem || err.Error() != "cannot use streams config: "+field+" "+fe.Problem(func(k string) string { return k }) {
			t.Errorf("Validate: field %q, problem %q (%v); want %q, %q", fe.Field, fe.Problem(flag), err, field, problem)
		}
	}
	f(func(c *StreamsConfig) { c.LogsMaxAge = -time.Second }, "logs.max_age", "-1s must be >= 0")
	f(func(c *StreamsConfig) { c.LogsStorage = "disk" }, "logs.storage", `"disk" must be "file" or "memory"`)
	f(func(c *StreamsConfig) { c.LogsMaxAge = time.Minute }, "duplicate_window", "2m0s must not exceed --logs-max_age 1m0s")
	f(func(c *StreamsConfig) { c.MaxAckPending = 0 }, "consumer.max_ack_pending", "0 must be >= 1")
}
