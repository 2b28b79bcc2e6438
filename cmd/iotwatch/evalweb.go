package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/iotwatch/iotwatch/internal/eval"
	"github.com/iotwatch/iotwatch/internal/websim"
)

// evalWeb generates a mixed NGINX log (devices and people behind one
// gateway, internal/websim) and replays it through the detectors and decide
// (eval.RunWeb), next to a signature tool.
func evalWeb(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("eval web", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o options
	o.register(fs, "", "")
	ips := fs.Int("ips", websim.DefaultIPs, "benign client addresses (homes, offices, crawlers, integrations, monitors, IoT devices and gateways)")
	attackers := fs.Int("attackers", websim.DefaultAttackIPs, "attacking addresses (stuffing, scanners, injection probes, floods, slow enumeration; -1: none)")
	hours := fs.Float64("hours", websim.DefaultHours, "event-time span of the log, in hours (attackers start after a fifth of it)")
	seed := fs.Int64("seed", 1, "seed of the generated log")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: iotwatch eval web [--ips N] [--attackers N] [--hours H] [--seed S] [--json]

Generates the access log of one NGINX in front of a web site and its IoT API (internal/websim):
people browsing from homes and office NATs (page loads pulling dozens of assets in bursts,
sessions, idle gaps), search crawlers, partner integrations polling the API with an export at
the top of each hour, uptime monitors, IoT devices and gateways, and attacking addresses
(credential stuffing, path scanners, SQL injection and traversal probes, an HTTP flood, slow
enumeration of device ids), each address labelled. The lines go through the same decode
(--format nginx) → detectors → decide code as 'iotwatch replay', at full speed on event time,
and through a simple signature tool (known-bad paths, auth-failure bursts, 404 ratio, flood;
see eval.Signature) as the yardstick. Prints, per attack type, the attackers alerted and
blocked and the median time to the first alert, next to the signature tool's; per benign kind,
the addresses alerted and blocked. Progress goes to standard error.

Matching: %s.

Flags (the detector and decision flags of 'iotwatch run' apply; connection flags are ignored):
`, eval.WebMatchRule)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	wc := websim.Config{Seed: *seed, IPs: *ips, Hours: *hours, AttackIPs: *attackers}
	if err := wc.Validate(); err != nil {
		return usageError{fmt.Errorf("cannot run eval web: %w", err)}
	}
	if *attackers == 0 {
		wc.AttackIPs = -1
	}
	cfg, err := o.config()
	if err != nil {
		return err
	}
	res, err := eval.RunWeb(ctx, cfg, wc, os.Stderr)
	if err != nil {
		return err
	}
	return printResult(stdout, res, *asJSON)
}
