package sim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// Defaults.
const (
	DefaultDevices     = 2000
	DefaultDuration    = 3 * time.Hour
	DefaultAttackStart = 0.6
	// MaxDevices bounds Config.Devices: device ids have six digits per class.
	MaxDevices = 1_000_000
	// MinAttackDevices is the smallest fleet that can host every attack type.
	MinAttackDevices = 20
	// MinFieldAttackDevices is the smallest fleet that can host every attack
	// type of ModelField (eleven types on distinct victims of fitting classes).
	MinFieldAttackDevices = 100
	// MinAttackSpan is the shortest attack period (Duration·(1-AttackStart)) that
	// fits every attack's window.
	MinAttackSpan = 15 * time.Minute
	// MaxDuration bounds Config.Duration.
	MaxDuration = 30 * 24 * time.Hour
)

// DefaultStart is the default event time of the first event.
var DefaultStart = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

// Config configures a simulated fleet. Zero Devices, Start, Duration and
// AttackStart take their defaults in New; Attacks is false in the zero Config
// and true in DefaultConfig.
type Config struct {
	// Seed makes the run reproducible: the same Config yields the same bytes.
	Seed int64
	// Devices is the fleet size (default DefaultDevices).
	Devices int
	// Start is the beginning of the simulated span; events fall in
	// [Start, Start+Duration) and the first one is at Start. It is truncated to
	// milliseconds (default DefaultStart).
	Start time.Time
	// Duration is the event-time span (default DefaultDuration).
	Duration time.Duration
	// Attacks injects the labelled attacks.
	Attacks bool
	// AttackStart is the fraction of Duration after which attacks may start, in
	// (0, 1) (default DefaultAttackStart): the warm-up before it is clean.
	AttackStart float64
	// Model is the traffic model, one of Models (default ModelBasic). New
	// builds ModelBasic only; Open builds any.
	Model string
	// Entities also injects the attacks spread over many devices and
	// addresses (EntityAttackTypes: credential stuffing across devices, a
	// distributed flood, a leaked API key), from their own random stream:
	// everything else is the same as without it. Needs Attacks.
	Entities bool
	// ThinFlood also injects AttackThinFlood (a distributed flood whose
	// bots share a few /24 and /48 networks and send 1-3 requests each),
	// planned after the others from streams of its own: every other line
	// and label is the one of the same Config without it. Needs Entities.
	ThinFlood bool
}

// DefaultConfig returns the default configuration, with attacks.
func DefaultConfig() Config {
	return Config{
		Seed:        1,
		Devices:     DefaultDevices,
		Start:       DefaultStart,
		Duration:    DefaultDuration,
		Attacks:     true,
		AttackStart: DefaultAttackStart,
	}
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.Devices == 0 {
		c.Devices = DefaultDevices
	}
	if c.Start.IsZero() {
		c.Start = DefaultStart
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.AttackStart == 0 {
		c.AttackStart = DefaultAttackStart
	}
	if c.Model == "" {
		c.Model = ModelBasic
	}
	c.Start = c.Start.UTC().Truncate(time.Millisecond)
	return c
}

// Validate checks c after applying defaults to its zero fields. Errors name the
// offending field.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Devices < 1 || c.Devices > MaxDevices {
		return fmt.Errorf("invalid Config.Devices %d: must be between 1 and %d", c.Devices, MaxDevices)
	}
	if y := c.Start.Year(); y < 2000 || y > 9000 {
		return fmt.Errorf("invalid Config.Start %q: the year must be between 2000 and 9000", c.Start.Format(time.RFC3339))
	}
	if c.Duration < time.Second || c.Duration > MaxDuration {
		return fmt.Errorf("invalid Config.Duration %s: must be between 1s and %s", c.Duration, MaxDuration)
	}
	if !(c.AttackStart > 0 && c.AttackStart < 1) {
		return fmt.Errorf("invalid Config.AttackStart %v: must be in (0, 1)", c.AttackStart)
	}
	if AttackTypesOf(c.Model) == nil {
		return fmt.Errorf("invalid Config.Model %q: must be one of %q", c.Model, Models)
	}
	if c.Attacks && c.Model == ModelField && c.Devices < MinFieldAttackDevices {
		return fmt.Errorf("invalid Config.Devices %d: the field model's attacks need at least %d devices", c.Devices, MinFieldAttackDevices)
	}
	if c.ThinFlood && !c.Entities {
		return fmt.Errorf("invalid Config.ThinFlood: the thin flood is an attack spread over devices and needs Config.Entities")
	}
	if c.Entities && !c.Attacks {
		return fmt.Errorf("invalid Config.Entities: the attacks spread over devices need Config.Attacks")
	}
	if c.Attacks {
		if c.Devices < MinAttackDevices {
			return fmt.Errorf("invalid Config.Devices %d: attacks need at least %d devices", c.Devices, MinAttackDevices)
		}
		if span := time.Duration(float64(c.Duration) * (1 - c.AttackStart)); span < MinAttackSpan {
			return fmt.Errorf("invalid Config.Duration %s: with AttackStart %v the attack period is %s, shorter than %s",
				c.Duration, c.AttackStart, span, MinAttackSpan)
		}
	}
	return nil
}

// Attack types (Label.Type).
const (
	AttackFlood             = "flood"
	AttackStolenAPIKey      = "stolen_api_key"
	AttackPrivilegedCommand = "privileged_command"
	AttackEnumeration       = "enumeration"
	AttackAuthFailures      = "auth_failures"
	AttackParamTampering    = "param_tampering"
)

// AttackTypes lists every attack type, in the order they are planned.
var AttackTypes = []string{AttackFlood, AttackStolenAPIKey, AttackPrivilegedCommand, AttackEnumeration, AttackAuthFailures,
	AttackParamTampering}

// Label describes one injected attack exactly: every event the attack produced
// has the label's Device (and Tenant) and IP and falls in [Start, End]; Start is
// the time of its first event and End of its last. APIKey is the key the
// attack used ("" for devices identified by certificate). Legitimate traffic of
// the same device continues during the window.
type Label struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Tenant string `json:"tenant"`
	Device string `json:"device"`
	APIKey string `json:"api_key,omitempty"`
	IP     string `json:"ip"`
	// Devices and IPs name every device and address of an attack spread over
	// several (EntityAttackTypes); empty for the others, which have one
	// Device and one IP.
	Devices []string `json:"devices,omitempty"`
	IPs     []string `json:"ips,omitempty"`
	// Classes are the class entities of Devices (tenant/class, the value
	// of a class alert's entity), each once.
	Classes     []string  `json:"classes,omitempty"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	Description string    `json:"description"`
	// Events is how many events the attack injected.
	Events int `json:"events"`
}

// addClass adds class entity c to l's Classes unless it holds it.
func (l *Label) addClass(c string) {
	if !slices.Contains(l.Classes, c) {
		l.Classes = append(l.Classes, c)
	}
}

// WriteLabels writes labels as JSON lines.
func WriteLabels(w io.Writer, labels []Label) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range labels {
		if err := enc.Encode(&labels[i]); err != nil {
			return fmt.Errorf("cannot write label %q: %w", labels[i].ID, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cannot write labels: %w", err)
	}
	return nil
}

// ReadLabels reads labels written by WriteLabels.
func ReadLabels(r io.Reader) ([]Label, error) {
	var out []Label
	dec := json.NewDecoder(r)
	for {
		var l Label
		if err := dec.Decode(&l); err == io.EOF {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("cannot read label %d: %w", len(out)+1, err)
		}
		out = append(out, l)
	}
}
