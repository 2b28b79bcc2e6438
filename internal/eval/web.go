package eval

import (
	"context"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/iotwatch/iotwatch/internal/config"
	"github.com/iotwatch/iotwatch/internal/websim"
	"github.com/iotwatch/iotwatch/pipeline"
	"github.com/iotwatch/iotwatch/pipeline/formats"
	"github.com/iotwatch/iotwatch/schemas"
)

// WebMatchRule states how RunWeb attributes alerts and decisions, printed
// with its results.
const WebMatchRule = "an alert belongs to the client IP of its event (every address has one label: benign kind or attack); " +
	"a decision to its alert's address; an attacker is caught when any alert names its address, a benign address is " +
	"alerted (blocked) when any alert (block) names it; the signature tool reads the same lines and bans on its first match"

// WebAttackRow is one attack type's row of `eval web`.
type WebAttackRow struct {
	Type     string `json:"type"`
	Injected int    `json:"injected"`
	Alerted  int    `json:"alerted"`
	Blocked  int    `json:"blocked"`
	// TTDMedianS is the median time from the attacker's first request to
	// its first alert, over the attackers alerted (null: none).
	TTDMedianS *float64 `json:"ttd_median_s"`
	// Signature* are the signature tool's figures on the same addresses.
	SignatureAlerted    int      `json:"signature_alerted"`
	SignatureTTDMedianS *float64 `json:"signature_ttd_median_s"`
	// Reasons counts, per detector/reason, the attackers an alert with that
	// reason named.
	Reasons map[string]int `json:"reasons"`
}

// WebBenignRow is one benign kind's row.
type WebBenignRow struct {
	Kind             string `json:"kind"`
	IPs              int    `json:"ips"`
	Alerted          int    `json:"alerted"`
	Blocked          int    `json:"blocked"`
	SignatureAlerted int    `json:"signature_alerted"`
}

// WebResult is what `eval web` reports (the --json object).
type WebResult struct {
	Seed        int64   `json:"seed"`
	IPs         int     `json:"ips"`
	Hours       float64 `json:"hours"`
	Lines       int     `json:"lines"`
	Undecodable int     `json:"undecodable"`
	Alerts      int     `json:"alerts"`
	Decisions   int     `json:"decisions"`

	Attacks []WebAttackRow `json:"attack_types"`
	Benign  []WebBenignRow `json:"benign_kinds"`
	// Totals over the rows.
	Attackers          int `json:"attackers"`
	AttackersAlerted   int `json:"attackers_alerted"`
	AttackersBlocked   int `json:"attackers_blocked"`
	AttackersSignature int `json:"attackers_signature"`
	BenignIPs          int `json:"benign_ips"`
	BenignAlerted      int `json:"benign_alerted"`
	BenignBlocked      int `json:"benign_blocked"`
	BenignSignature    int `json:"benign_signature"`
	// BenignAlertReasons counts, per detector/reason, the benign addresses an
	// alert with that reason named.
	BenignAlertReasons map[string]int `json:"benign_alert_reasons"`
	Matching           string         `json:"matching"`
}

// RunWeb generates wc's mixed web log, replays it through the scoring stack
// of cfg (decoded as NGINX combined lines, as `iotwatch replay --format
// nginx` does) and next to it through the signature tool, and counts the
// attackers caught and the benign addresses alerted and blocked.
func RunWeb(ctx context.Context, cfg pipeline.Config, wc websim.Config, progress io.Writer) (*WebResult, error) {
	gen, err := websim.New(wc)
	if err != nil {
		return nil, config.UsageError{Err: err}
	}
	wc = gen.Config()
	fo := cfg.Formats
	fo.Source = "eval"
	dec, err := formats.New(schemas.FormatNginx, fo)
	if err != nil {
		return nil, fmt.Errorf("cannot build the decoder: %w", err)
	}
	st, err := NewReplayStack(cfg)
	if err != nil {
		return nil, err
	}
	sig := NewSignature()
	type hits struct {
		first   time.Time
		blocked bool
		reasons map[string]bool
	}
	byIP := map[string]*hits{}
	alertIP := map[string]string{}
	res := &WebResult{Seed: wc.Seed, IPs: wc.IPs, Hours: wc.Hours, Matching: WebMatchRule}
	addAlert := func(a *schemas.Alert) {
		res.Alerts++
		if a.ClientIP == "" {
			return
		}
		alertIP[a.ID] = a.ClientIP
		h := byIP[a.ClientIP]
		if h == nil {
			h = &hits{first: a.Time, reasons: map[string]bool{}}
			byIP[a.ClientIP] = h
		}
		if a.Time.Before(h.first) {
			h.first = a.Time
		}
		for _, r := range a.Reasons {
			h.reasons[r.Detector+"/"+r.Reason] = true
		}
	}
	addDecision := func(d *schemas.Decision) {
		res.Decisions++
		if d.Action != schemas.ActionBlock && d.Action != schemas.ActionDryRunBlock {
			return
		}
		ip := alertIP[d.AlertID]
		if d.Scope == schemas.ScopeIP {
			ip = d.Value
		}
		if h := byIP[ip]; h != nil {
			h.blocked = true
		}
	}
	var (
		ev    schemas.Event
		sc    schemas.Scored
		buf   []byte
		seq   uint64
		start = time.Now()
		last  = start
	)
	for {
		line, t, ok := gen.Next(buf[:0])
		if !ok {
			break
		}
		buf = line
		seq++
		if seq%progressEvery == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if now := time.Now(); now.Sub(last) >= 5*time.Second {
				last = now
				fmt.Fprintf(progress, "eval web: %s  lines %d  alerts %d  decisions %d\n", t.Format(time.TimeOnly), seq, res.Alerts, res.Decisions)
			}
		}
		sig.Observe(line, t)
		if err := dec.Decode(line, seq, 0, 0, &ev); err != nil {
			res.Undecodable++
			continue
		}
		st.Score(&ev, &sc, func(a *schemas.Alert, d *schemas.Decision) {
			if a != nil {
				addAlert(a)
			}
			if d != nil {
				addDecision(d)
			}
		})
	}
	res.Lines = int(seq)
	fmt.Fprintf(progress, "eval web: %d lines (%d undecodable) in %.1fs: %d alerts, %d decisions\n",
		seq, res.Undecodable, time.Since(start).Seconds(), res.Alerts, res.Decisions)

	flagged := sig.Flagged()
	res.BenignAlertReasons = map[string]int{}
	attack := map[string]*WebAttackRow{}
	ttd := map[string][]float64{}
	sigTTD := map[string][]float64{}
	for _, typ := range websim.AttackTypes {
		res.Attacks = append(res.Attacks, WebAttackRow{Type: typ, Reasons: map[string]int{}})
	}
	for i := range res.Attacks {
		attack[res.Attacks[i].Type] = &res.Attacks[i]
	}
	benign := map[string]*WebBenignRow{}
	for _, k := range websim.BenignKinds {
		res.Benign = append(res.Benign, WebBenignRow{Kind: k})
	}
	for i := range res.Benign {
		benign[res.Benign[i].Kind] = &res.Benign[i]
	}
	for _, l := range gen.Labels() {
		if l.Requests == 0 {
			continue
		}
		h, s := byIP[l.IP], flagged[l.IP]
		if l.Attack != "" {
			row := attack[l.Attack]
			row.Injected++
			res.Attackers++
			if h != nil {
				row.Alerted++
				res.AttackersAlerted++
				ttd[l.Attack] = append(ttd[l.Attack], max(0, h.first.Sub(l.Start).Seconds()))
				if h.blocked {
					row.Blocked++
					res.AttackersBlocked++
				}
				for r := range h.reasons {
					row.Reasons[r]++
				}
			}
			if s.Rule != "" {
				row.SignatureAlerted++
				res.AttackersSignature++
				sigTTD[l.Attack] = append(sigTTD[l.Attack], max(0, s.Time.Sub(l.Start).Seconds()))
			}
			continue
		}
		row := benign[l.Kind]
		row.IPs++
		res.BenignIPs++
		if h != nil {
			row.Alerted++
			res.BenignAlerted++
			if h.blocked {
				row.Blocked++
				res.BenignBlocked++
			}
			for r := range h.reasons {
				res.BenignAlertReasons[r]++
			}
		}
		if s.Rule != "" {
			row.SignatureAlerted++
			res.BenignSignature++
		}
	}
	for i := range res.Attacks {
		r := &res.Attacks[i]
		r.TTDMedianS, r.SignatureTTDMedianS = median(ttd[r.Type]), median(sigTTD[r.Type])
	}
	return res, nil
}

func median(xs []float64) *float64 {
	if len(xs) == 0 {
		return nil
	}
	slices.Sort(xs)
	n := len(xs)
	return ptr((xs[(n-1)/2] + xs[n/2]) / 2)
}

// Print writes the result as two tables (attack types, benign kinds) and
// the totals.
func (r *WebResult) Print(w io.Writer) {
	fmt.Fprintf(w, "Web log: %d benign addresses + %d attackers, %g h, seed %d; %d NGINX lines (%d undecodable), %d alerts, %d decisions.\n\n",
		r.BenignIPs, r.Attackers, r.Hours, r.Seed, r.Lines, r.Undecodable, r.Alerts, r.Decisions)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ATTACK\tIPS\tALERTED\tBLOCKED\tTTD MEDIAN\tSIGNATURE\tSIG TTD\tREASONS (ATTACKERS)")
	for _, a := range r.Attacks {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%s\t%s\n", a.Type, a.Injected, a.Alerted, a.Blocked, fmtSeconds(a.TTDMedianS),
			a.SignatureAlerted, fmtSeconds(a.SignatureTTDMedianS), fmtCounts(a.Reasons, " "))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENIGN KIND\tIPS\tALERTED\tBLOCKED\tSIGNATURE")
	for _, b := range r.Benign {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", b.Kind, b.IPs, b.Alerted, b.Blocked, b.SignatureAlerted)
	}
	tw.Flush()
	pct := func(n, d int) float64 {
		if d == 0 {
			return 0
		}
		return 100 * float64(n) / float64(d)
	}
	fmt.Fprintf(w, "\nAttackers: %d of %d alerted, %d blocked; the signature tool: %d.\n", r.AttackersAlerted, r.Attackers, r.AttackersBlocked, r.AttackersSignature)
	fmt.Fprintf(w, "Benign addresses: %d of %d alerted (%.2f%%), %d blocked; the signature tool: %d.\n",
		r.BenignAlerted, r.BenignIPs, pct(r.BenignAlerted, r.BenignIPs), r.BenignBlocked, r.BenignSignature)
	if len(r.BenignAlertReasons) > 0 {
		fmt.Fprintf(w, "Reasons on benign addresses: %s\n", fmtCounts(r.BenignAlertReasons, " "))
	}
	fmt.Fprintf(w, "Matching: %s.\n", r.Matching)
}
