package schemas

// Log formats: the <format> token of log subjects (iotwatch.logs.<format>.<source>),
// and the --format of ship and replay (decoders in pipeline/formats).
const (
	// FormatJSON is the canonical one: JSON lines (one or more
	// newline-separated events per message), documented in codec.go.
	FormatJSON      = "json"
	FormatKong      = "kong"       // Kong http-log plugin JSON, one object or an array of objects per line
	FormatNginx     = "nginx"      // NGINX access log, default "combined" format
	FormatNginxJSON = "nginx-json" // NGINX access log in the iotwatch JSON log_format (deploy/nginx)
	FormatEnvoy     = "envoy"      // Envoy JSON access log (deploy/envoy)
	FormatMosquitto = "mosquitto"  // Mosquitto broker log lines (log_type all)
	FormatEMQX      = "emqx"       // EMQX rule-engine / webhook event JSON
	FormatTraefik   = "traefik"    // Traefik JSON access log (accessLog.format json, deploy/traefik)
)
