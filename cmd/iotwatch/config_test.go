package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/iotwatch/iotwatch/internal/sim"
)

var update = flag.Bool("update", false, "rewrite deploy/iotwatch.conf.example")

const exampleConfigPath = "../../deploy/iotwatch.conf.example"

// writeConfigFile writes a config file in a test's directory.
func writeConfigFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "iotwatch.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// printConfig runs 'iotwatch run ARGS --print-config' and returns the
// effective settings.
func printConfig(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := mainExit(append(append([]string{"run"}, args...), "--print-config"), &out, &errOut); code != 0 {
		t.Fatalf("run %v --print-config: exit %d: %s", args, code, errOut.String())
	}
	settings, err := configSchema().Parse("printed", &out)
	if err != nil {
		t.Fatalf("the printed configuration does not load: %v\n%s", err, out.String())
	}
	m := map[string]string{}
	for _, s := range settings {
		m[s.Key] = s.Value
	}
	return m
}

func TestConfigPrecedence(t *testing.T) {
	path := writeConfigFile(t, `
# a comment, then blank lines

workers = 3
block-threshold = 0.95
cooldown = 90s
detectors = volume
detectors = geo
`)
	got := printConfig(t, "--config", path, "--workers", "5")
	def := func(key string) string { return configSchema().Flags.Lookup(key).DefValue }
	for key, want := range map[string]string{
		"workers":         "5",                // command line over file
		"block-threshold": "0.95",             // file over default
		"cooldown":        "1m30s",            // file, as the flag prints it
		"detectors":       "volume,geo",       // a repeated list key
		"fetch-batch":     def("fetch-batch"), // default
		"alert-threshold": def("alert-threshold"),
	} {
		if got[key] != want {
			t.Errorf("%s = %q, want %q", key, got[key], want)
		}
	}
	if len(got) != countConfigKeys() {
		t.Errorf("--print-config printed %d keys, want every one of the %d", len(got), countConfigKeys())
	}
	// Without --config, the printed configuration is the defaults.
	for key, v := range printConfig(t) {
		if v != def(key) {
			t.Errorf("default %s = %q, want %q", key, v, def(key))
		}
	}
}

func countConfigKeys() int {
	n := 0
	configSchema().Flags.VisitAll(func(f *flag.Flag) {
		if configSchema().IsKey(f.Name) {
			n++
		}
	})
	return n
}

func TestConfigErrorsNameLineAndField(t *testing.T) {
	t.Setenv("IOTWATCH_TEST_CH_PASSWORD", "from-env")
	f := func(text, field string, line int, args ...string) {
		t.Helper()
		path := writeConfigFile(t, "# iotwatch\nfetch-batch = 128\n"+text+"\n")
		var out, errOut bytes.Buffer
		code := mainExit(append([]string{"run", "--config", path}, args...), &out, &errOut)
		want := `cannot load config "` + path + `": line ` + strconv.Itoa(line) + ": "
		if field != "" {
			want += `field "` + field + `": `
		}
		if code != 2 || !strings.Contains(errOut.String(), want) {
			t.Errorf("config %q %v: exit %d, stderr %q; want exit 2 and %q", text, args, code, errOut.String(), want)
		}
		if strings.Contains(errOut.String(), "hunter2") {
			t.Errorf("config %q: the error prints the secret: %s", text, errOut.String())
		}
	}
	// Syntax.
	f("workers 3", "", 3)
	f("= 3", "", 3)
	f("workerz = 3", "workerz", 3)
	f("--workers = 3", "--workers", 3)
	f("config = other.conf", "config", 3)
	f("fetch-batch = 4", "fetch-batch", 3) // set twice
	// Values that do not parse, even when the command line overrides them.
	f("flush-interval = soon", "flush-interval", 3)
	f("dry-run = perhaps", "dry-run", 3, "--dry-run")
	f("alert-threshold = high", "alert-threshold", 3)
	// Semantically invalid settings.
	f("alert-threshold = 1.5", "alert-threshold", 3)
	f("alert-threshold = 0.95", "alert-threshold", 3) // above the default block threshold
	f("block-threshold = 0", "block-threshold", 3)
	f("flush-interval = -1s", "flush-interval", 3)
	f("cooldown = -5m", "cooldown", 3)
	f("max-block-ttl = 1m", "max-block-ttl", 3)
	f("fetch-batch = 0", "fetch-batch", 3)
	f("replicas = 9", "replicas", 3)
	f("logs-retention = forever", "logs-retention", 3)
	f("block-scope = galaxy", "block-scope", 3)
	f("allowlist = 10.0.0.0/77", "allowlist", 3)
	f("detectors = astrology", "detectors", 3)
	f("identity = horoscope", "identity", 3)
	f("log-level = loud", "log-level", 3)
	f("geoip = /nonexistent/geo.mmdb", "geoip", 3)
	f("database = a;drop", "database", 3)
	f("\n\nworkers = -1", "workers", 5)
	f("allowlist = 10.0.0.1\nallowlist = 10.0.0.0/77", "allowlist", 3) // the first line of a list key
	// Secrets: references only; the value is never printed.
	f("nats-password = hunter2", "nats-password", 3)
	f("clickhouse-password = hunter2", "clickhouse-password", 3)
	f("nats-token = hunter2", "nats-token", 3)
	f("clickhouse = clickhouse://u:hunter2@127.0.0.1:9000/default", "clickhouse", 3)
	f("nats = nats://u:hunter2@127.0.0.1:4222", "nats", 3)
	f("nats = nats://hunter2@127.0.0.1:4222", "nats", 3)

	// A reference is accepted; the command line wins over a semantically
	// invalid file value.
	path := writeConfigFile(t, "clickhouse-password = env:IOTWATCH_TEST_CH_PASSWORD\nalert-threshold = 1.5\n")
	if got := printConfig(t, "--config", path, "--alert-threshold", "0.5"); got["clickhouse-password"] != "env:IOTWATCH_TEST_CH_PASSWORD" || got["alert-threshold"] != "0.5" {
		t.Errorf("printed %v", got)
	}
	// Every command that shares the pipeline's options reads --config.
	bad := writeConfigFile(t, "\ncooldown = -1m\n")
	for _, args := range [][]string{{"replay", "--config", bad, "-"}, {"demo", "--config", bad}} {
		var out, errOut bytes.Buffer
		want := `cannot load config "` + bad + `": line 2: field "cooldown": `
		if code := mainExit(args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", args, code, errOut.String(), want)
		}
	}
	var out, errOut bytes.Buffer
	if code := mainExit([]string{"run", "--config", "/nonexistent/iotwatch.conf"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "/nonexistent/iotwatch.conf") {
		t.Errorf("missing config file: exit %d, stderr %q", code, errOut.String())
	}
}

func TestPrintConfigRedactsSecrets(t *testing.T) {
	var out, errOut bytes.Buffer
	code := mainExit([]string{"run", "--nats-password", "hunter2", "--nats-token", "env:TOKEN",
		"--clickhouse", "clickhouse://u:hunter2@127.0.0.1:9000/default", "--nats", "nats://u:hunter2@127.0.0.1:4222",
		"--print-config"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "hunter2") {
		t.Errorf("--print-config prints a secret:\n%s", out.String())
	}
	// A reference is not a secret: it tells the operator where the secret is.
	if !strings.Contains(out.String(), "\nnats-token = env:TOKEN\n") {
		t.Errorf("--print-config does not show the reference of --nats-token:\n%s", out.String())
	}
}

// fleetLog writes the canonical JSON log of a small simulated fleet with
// attacks and returns its path and the simulator (for its labels).
func fleetLog(t *testing.T, devices int, span time.Duration) (string, *sim.Sim) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Devices, cfg.Duration = devices, span
	fl, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	for {
		l, _, ok := fl.Next(nil)
		if !ok {
			break
		}
		logs.Write(l)
		logs.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "access.log")
	if err := os.WriteFile(path, logs.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, fl
}

// TestReplayConfigAppliesDecidePolicy: replay --config takes the decision
// policy from the file (an allowlist of every address stops every block but
// not the alerts), and the command line still wins over the file.
func TestReplayConfigAppliesDecidePolicy(t *testing.T) {
	in, _ := fleetLog(t, 200, 8*time.Hour)
	// A run config: replay ignores the connection keys.
	conf := writeConfigFile(t, `
nats = nats://127.0.0.1:4222
nats-password = env:IOTWATCH_TEST_UNSET
allowlist = 0.0.0.0/0
allowlist = ::/0
`)
	replay := func(args ...string) map[string]int {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := mainExit(append(append([]string{"replay"}, args...), in), &stdout, &stderr); code != 0 {
			t.Fatalf("replay %v exited %d: %s", args, code, stderr.String())
		}
		kinds := map[string]int{}
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			var rec struct{ Kind string }
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("output line %q: %v", sc.Text(), err)
			}
			kinds[rec.Kind]++
		}
		return kinds
	}
	base := replay()
	if base["decision"] == 0 || base["alert"] == 0 {
		t.Fatalf("the fixture must raise alerts and decisions without a config: %v", base)
	}
	if got := replay("--config", conf); got["decision"] != 0 || got["alert"] == 0 {
		t.Errorf("with every address allowlisted in --config: %v, want alerts and no decision", got)
	}
	if got := replay("--config", conf, "--allowlist", "192.0.2.1"); got["decision"] != base["decision"] {
		t.Errorf("--allowlist on the command line must override the file: %v, want %d decisions", got, base["decision"])
	}
}

// TestExampleConfigIsCurrent keeps deploy/iotwatch.conf.example in step with
// the flags; -update rewrites it. Uncommented, it loads as the defaults.
func TestExampleConfigIsCurrent(t *testing.T) {
	var b bytes.Buffer
	if err := writeExampleConfig(&b); err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(exampleConfigPath, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	have, err := os.ReadFile(exampleConfigPath)
	if err != nil {
		t.Fatalf("%v (run the test with -update)", err)
	}
	if !bytes.Equal(have, b.Bytes()) {
		t.Fatalf("%s is stale: run go test ./cmd/iotwatch/ -run TestExampleConfigIsCurrent -update", exampleConfigPath)
	}
	uncommented := regexp.MustCompile(`(?m)^#([a-z][a-z0-9-]* =)`).ReplaceAll(have, []byte("$1"))
	got := printConfig(t, "--config", writeConfigFile(t, string(uncommented)))
	if len(got) != countConfigKeys() {
		t.Errorf("the example documents %d keys, want %d", len(got), countConfigKeys())
	}
	for key, v := range got {
		if def := configSchema().Flags.Lookup(key).DefValue; v != def {
			t.Errorf("example %s = %q, default %q", key, v, def)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^[a-z][a-z0-9-]* =`).FindAll(uncommented, -1)); n != countConfigKeys() {
		t.Errorf("the uncommented example sets %d keys, want %d", n, countConfigKeys())
	}
}

// readsFiles reports whether a loaded config makes build read a file; the
// fuzzer must not read the machine's files (a device file never ends).
func readsFiles(o *options) bool {
	return o.geoip != "" || o.keySecret != "" || o.signingKey != "" || strings.HasPrefix(o.allowlist, "@")
}

// FuzzLoadConfig: loading never panics, every error names a line or a field,
// and a valid config printed and loaded again gives the same settings.
func FuzzLoadConfig(f *testing.F) {
	if example, err := os.ReadFile(exampleConfigPath); err == nil {
		f.Add(example)
		f.Add(regexp.MustCompile(`(?m)^#([a-z][a-z0-9-]* =)`).ReplaceAll(example, []byte("$1")))
	}
	for _, s := range []string{
		"workers = 3\nblock-threshold = 0.95\n",
		"detectors = volume\ndetectors = geo\n",
		"allowlist = 10.0.0.0/8\nallowlist = ::/0\ndry-run = true\n",
		"alert-threshold = 1.5\n", "cooldown = -1s\n", "workers = x\n", "nats-password = env:X\n",
		"nats-password = hunter2\n", "clickhouse = clickhouse://u:p@h/db\n", "# c\n\nlog-level = debug\r\n",
		"identity = header:X-Device\ncountry-field = CF-IPCountry\n",
	} {
		f.Add([]byte(s))
	}
	named := regexp.MustCompile(`line \d+|field "|--[a-z]`)
	f.Fuzz(func(t *testing.T, data []byte) {
		o, fs := newRunFlags()
		src, err := configSchema().Apply(fs, "fuzz.conf", bytes.NewReader(data))
		if err != nil {
			if !named.MatchString(err.Error()) {
				t.Fatalf("error names no line or field: %v", err)
			}
			return
		}
		if readsFiles(o) {
			return
		}
		if _, err := o.build(); err != nil {
			if err = src.Locate(err); !named.MatchString(err.Error()) {
				t.Fatalf("error names no line or field: %v", err)
			}
			return
		}
		var first bytes.Buffer
		if err := configSchema().Write(&first, fs); err != nil {
			t.Fatal(err)
		}
		_, fs2 := newRunFlags()
		if _, err := configSchema().Apply(fs2, "printed.conf", bytes.NewReader(first.Bytes())); err != nil {
			t.Fatalf("the printed configuration does not load: %v\n%s", err, first.String())
		}
		var second bytes.Buffer
		if err := configSchema().Write(&second, fs2); err != nil {
			t.Fatal(err)
		}
		if first.String() != second.String() {
			t.Fatalf("printed and reloaded, the configuration changes:\n%s\n---\n%s", first.String(), second.String())
		}
	})
}

// TestSkipBlockedReachesThePipeline: --skip-blocked (off by default) is the
// pipeline's SkipBlocked, from the command line and from --config.
func TestSkipBlockedReachesThePipeline(t *testing.T) {
	for _, c := range []struct {
		args []string
		file string
		want bool
	}{{nil, "", false}, {[]string{"--skip-blocked"}, "", true}, {nil, "skip-blocked = true\n", true}} {
		o, fs := newRunFlags()
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if c.file != "" {
			if _, err := configSchema().Apply(fs, "t.conf", strings.NewReader(c.file)); err != nil {
				t.Fatal(err)
			}
		}
		cfg, err := o.build()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.SkipBlocked != c.want {
			t.Errorf("args %q, file %q: SkipBlocked %v, want %v", c.args, c.file, cfg.SkipBlocked, c.want)
		}
	}
}
