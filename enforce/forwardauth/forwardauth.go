// Package forwardauth answers forward-auth checks from an enforcement client:
// NGINX auth_request, Envoy ext_authz (HTTP service), Traefik forwardAuth and
// any gateway that asks an HTTP endpoint before routing a request. It is the
// handler behind `iotwatch enforce http`; the closed-loop tests in tests/loop
// put it behind a real NGINX.
//
// A check carries the request's identity in headers the gateway sets (device
// id, API key, tenant, client IP); the answer is 200 to allow or the
// configured deny status with headers naming the decision. Each header is
// matched in its own namespace (see schemas.ScopeDevice and friends): the
// device header against device decisions only, the API key, hashed as the
// pipeline hashes keys found in logs (Config.KeyHash), against api_key
// decisions only, so an MQTT client's block (mqtt_username) never denies an
// HTTP request that happens to send the same name. Answers come from
// the client's local cache: no network round trip on the check path.
package forwardauth

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/iotwatch/iotwatch/enforce"
	"github.com/iotwatch/iotwatch/schemas"
)

// Config says where a check's identity is and how a denial looks.
type Config struct {
	// DeviceHeader, KeyHeader and TenantHeader name the request headers
	// matched against device, api_key and tenant decisions; any case.
	DeviceHeader, KeyHeader, TenantHeader string
	// IPHeaders carry the client IP, first present wins; of a
	// comma-separated list (X-Forwarded-For) the last address is used, the
	// one the nearest proxy appended, so a client cannot spoof its way out.
	IPHeaders []string
	// DenyStatus is the status of a denied check (NGINX auth_request
	// accepts only 401 or 403).
	DenyStatus int
	// ThrottleRPS is the rate let through for a throttled scope, per
	// decision; 0 denies every throttled request.
	ThrottleRPS float64
	// KeyHash, when not nil, maps an API key from KeyHeader to the value the
	// pipeline stores in decisions (formats.KeyHasher); nil matches keys as sent.
	KeyHash func(string) string
}

// Scopes returns the decision scopes a forward-auth check matches: device
// (the device header), api_key (the key header, hashed with Config.KeyHash),
// ip and cidr (the client IP), tenant (the tenant header). Give them to the
// enforce.Client as Options.Scopes: it then acknowledges decisions of the
// MQTT scopes (mqtt_username, mqtt_client_id), which no HTTP request
// carries, as not_applicable.
func Scopes() []string { return enforce.CheckScopes() }

// DefaultConfig is what `iotwatch enforce http` uses without flags, and what
// the shipped gateway configurations in deploy/ send: the headers of schemas,
// X-Real-IP then X-Forwarded-For, 403, one request per second when throttled.
func DefaultConfig() Config {
	return Config{
		DeviceHeader: schemas.HeaderDeviceID,
		KeyHeader:    schemas.HeaderAPIKey,
		TenantHeader: schemas.HeaderTenantID,
		IPHeaders:    []string{"X-Real-IP", "X-Forwarded-For"},
		DenyStatus:   http.StatusForbidden,
		ThrottleRPS:  1,
	}
}

// Handler answers checks on any path (mount it where the gateway asks, or
// use Mux). It is safe for concurrent use.
type Handler struct {
	c                                   *enforce.Client
	deviceHeader, keyHeader, tenantHdr  string // canonical header names
	ipHeaders                           []string
	denyStatus                          int
	throttle                            *throttler
	keyHash                             func(string) string
	allowed, blocked, throttled, passed atomic.Uint64 // passed: throttled but within the rate
}

// New returns a handler answering from c. It does not start c: the caller
// runs c.Run; until c has synced, checks answer from what c holds (its state
// file, or nothing: allow).
func New(c *enforce.Client, cfg Config) *Handler {
	h := &Handler{
		c:            c,
		deviceHeader: textproto.CanonicalMIMEHeaderKey(cfg.DeviceHeader),
		keyHeader:    textproto.CanonicalMIMEHeaderKey(cfg.KeyHeader),
		tenantHdr:    textproto.CanonicalMIMEHeaderKey(cfg.TenantHeader),
		denyStatus:   cfg.DenyStatus,
		throttle:     newThrottler(cfg.ThrottleRPS),
		keyHash:      cfg.KeyHash,
	}
	for _, name := range cfg.IPHeaders {
		h.ipHeaders = append(h.ipHeaders, textproto.CanonicalMIMEHeaderKey(name))
	}
	return h
}

// Paths served by Mux.
const (
	// PathCheck answers checks, also on any path below it: Envoy ext_authz
	// appends the original request path to its path_prefix.
	PathCheck = "/check"
	// PathHealth answers 200 once the client has synced with NATS, 503 before.
	PathHealth = "/healthz"
	// PathMetrics serves the counters in the Prometheus text format.
	PathMetrics = "/metrics"
)

// Mux serves the handler on PathCheck (and below), PathHealth and PathMetrics.
func (h *Handler) Mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(PathCheck, h)
	mux.Handle(PathCheck+"/", h)
	mux.HandleFunc(PathHealth, func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-h.c.Synced():
			io.WriteString(w, "ok\n")
		default:
			http.Error(w, "not synced with NATS yet", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc(PathMetrics, h.WriteMetrics)
	return mux
}

// ServeHTTP answers one check: 200 to allow; the deny status with the
// headers schemas.HeaderEnforceAction, HeaderEnforceScope and
// HeaderEnforceDecision to deny. A throttled request let through by its rate
// gets 200 with HeaderEnforceAction "throttle".
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := enforce.Request{
		Device: first(r.Header[h.deviceHeader]),
		APIKey: first(r.Header[h.keyHeader]),
		Tenant: first(r.Header[h.tenantHdr]),
		IP:     h.clientIP(r.Header),
	}
	if req.APIKey != "" && h.keyHash != nil {
		req.APIKey = h.keyHash(req.APIKey)
	}
	v := h.c.Check(req)
	switch {
	case v.Allowed():
		h.allowed.Add(1)
		w.WriteHeader(http.StatusOK)
		return
	case v.Action == schemas.ActionThrottle && h.throttle.allow(v.DecisionID, time.Now()):
		h.passed.Add(1)
		w.Header().Set(schemas.HeaderEnforceAction, v.Action)
		w.WriteHeader(http.StatusOK)
		return
	case v.Action == schemas.ActionThrottle:
		h.throttled.Add(1)
	default:
		h.blocked.Add(1)
	}
	hd := w.Header()
	hd.Set(schemas.HeaderEnforceAction, v.Action)
	hd.Set(schemas.HeaderEnforceScope, v.Scope)
	hd.Set(schemas.HeaderEnforceDecision, v.DecisionID)
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(h.denyStatus)
	io.WriteString(w, "denied by iotwatch\n")
}

// clientIP returns the address in the first of h.ipHeaders present: the last
// element of a comma-separated list (what the nearest proxy appended).
func (h *Handler) clientIP(hd http.Header) netip.Addr {
	for _, name := range h.ipHeaders {
		vs := hd[name]
		if len(vs) == 0 {
			continue
		}
		v := vs[len(vs)-1]
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			v = v[i+1:]
		}
		v = strings.TrimSpace(v)
		if a, err := netip.ParseAddr(v); err == nil {
			return a
		}
		if ap, err := netip.ParseAddrPort(v); err == nil {
			return ap.Addr()
		}
		return netip.Addr{}
	}
	return netip.Addr{}
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// WriteMetrics writes the check counters and the client's statistics in the
// Prometheus text format.
func (h *Handler) WriteMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	st := h.c.Stats()
	family(w, "counter", schemas.MetricEnforceChecks, "verdict",
		sample{"allow", h.allowed.Load()}, sample{"block", h.blocked.Load()},
		sample{"throttle", h.throttled.Load()}, sample{"throttle_passed", h.passed.Load()})
	family(w, "gauge", schemas.MetricEnforceActive, "", sample{n: uint64(st.Active)})
	family(w, "counter", schemas.MetricEnforceApplied, "", sample{n: st.Applied})
	family(w, "counter", schemas.MetricEnforceRemoved, "", sample{n: st.Removed})
	family(w, "counter", schemas.MetricEnforceIgnoredDeletes, "", sample{n: st.IgnoredDeletes})
	family(w, "counter", schemas.MetricEnforceRejected, "reason",
		sample{"unsigned", st.RejectedUnsigned}, sample{"bad_signature", st.RejectedBadSig},
		sample{"unknown_key", st.RejectedUnknown}, sample{"invalid", st.RejectedInvalid})
	family(w, "counter", schemas.MetricEnforceResyncs, "", sample{n: st.Resyncs})
	family(w, "counter", schemas.MetricEnforceReceipts, "result",
		sample{"published", st.ReceiptsSent}, sample{"error", st.ReceiptErrors}, sample{"dropped", st.ReceiptsDropped})
}

// sample is one value of a metric family, under a label value.
type sample struct {
	label string
	n     uint64
}

// family writes a metric family of type typ in the Prometheus text format:
// "name n", or with a label name "name{label=\"value\"} n" per sample.
func family(w io.Writer, typ, name, label string, samples ...sample) {
	fmt.Fprintf(w, "# TYPE %s %s\n", name, typ)
	for _, s := range samples {
		if label == "" {
			fmt.Fprintf(w, "%s %d\n", name, s.n)
		} else {
			fmt.Fprintf(w, "%s{%s=%q} %d\n", name, label, s.label, s.n)
		}
	}
}
