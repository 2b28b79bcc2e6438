package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/secrets"
	"github.com/iotwatch/iotwatch/pipeline/bus"
	"github.com/iotwatch/iotwatch/pipeline/sink"
)

// connFlags are the authentication and TLS flags of the NATS and ClickHouse
// connections. Secret flags take a reference (file:/path or env:NAME); a
// literal works but is visible in ps, so it is discouraged.
type connFlags struct {
	natsUser, natsPassword, natsToken, natsNkeySeed, natsCreds string
	natsCA, natsCert, natsKey                                  string
	natsInbox                                                  string

	chUser, chPassword, chCA, chCert, chKey string
	chTLS                                   bool
}

// connFlagNames maps the setting keys that connection errors name to the flags.
var connFlagNames = map[string]string{
	bus.SettingURL: "--nats", bus.SettingUser: "--nats-user", bus.SettingPassword: "--nats-password",
	bus.SettingToken: "--nats-token", bus.SettingNkeySeed: "--nats-nkey-seed", bus.SettingCreds: "--nats-creds",
	bus.SettingCA: "--nats-ca", bus.SettingCert: "--nats-cert", bus.SettingKey: "--nats-key",
	bus.SettingInbox:  "--nats-inbox-prefix",
	sink.CHSettingDSN: "--clickhouse", sink.CHSettingUser: "--clickhouse-user", sink.CHSettingPassword: "--clickhouse-password",
	sink.CHSettingTLS: "--clickhouse-tls", sink.CHSettingCA: "--clickhouse-ca", sink.CHSettingCert: "--clickhouse-cert",
	sink.CHSettingKey: "--clickhouse-key",
}

func connFlagName(key string) string {
	if f, ok := connFlagNames[key]; ok {
		return f
	}
	return key
}

const secretRefHelp = " (file:/path or env:NAME; a literal value is visible in ps)"

func (c *connFlags) register(fs *flag.FlagSet, inbox string) {
	c.registerNATS(fs, inbox)
	c.registerClickHouse(fs)
}

// registerNATS registers the NATS authentication and TLS flags (every command
// that connects to NATS has them); inbox is the default reply inbox prefix of
// the command's role in deploy/nats (schemas.InboxPipeline and its siblings).
func (c *connFlags) registerNATS(fs *flag.FlagSet, inbox string) {
	fs.StringVar(&c.natsInbox, "nats-inbox-prefix", inbox, "subject prefix of this client's reply inboxes (JetStream answers, acks, pulled messages); deploy/nats lets each role subscribe to its own prefix only, so no role reads another's replies")
	fs.StringVar(&c.natsUser, "nats-user", "", "NATS user name, with --nats-password")
	fs.StringVar(&c.natsPassword, "nats-password", "", "NATS password"+secretRefHelp)
	fs.StringVar(&c.natsToken, "nats-token", "", "NATS authorization token"+secretRefHelp)
	fs.StringVar(&c.natsNkeySeed, "nats-nkey-seed", "", "file with a NATS user nkey seed (SU...)")
	fs.StringVar(&c.natsCreds, "nats-creds", "", "NATS credentials file (user JWT and seed, from nsc)")
	fs.StringVar(&c.natsCA, "nats-ca", "", "PEM file of the CAs that sign the NATS server's certificate (makes TLS mandatory; default: system roots if the server wants TLS)")
	fs.StringVar(&c.natsCert, "nats-cert", "", "PEM client certificate for NATS servers that verify clients, with --nats-key")
	fs.StringVar(&c.natsKey, "nats-key", "", "PEM private key of --nats-cert")
}

// registerClickHouse registers the ClickHouse authentication and TLS flags.
func (c *connFlags) registerClickHouse(fs *flag.FlagSet) {
	fs.StringVar(&c.chUser, "clickhouse-user", "", "ClickHouse user (overrides the DSN's)")
	fs.StringVar(&c.chPassword, "clickhouse-password", "", "ClickHouse password, overrides the DSN's"+secretRefHelp)
	fs.BoolVar(&c.chTLS, "clickhouse-tls", false, "use TLS to ClickHouse (the server's secure native port, usually 9440); implied by --clickhouse-ca and --clickhouse-cert")
	fs.StringVar(&c.chCA, "clickhouse-ca", "", "PEM file of the CAs that sign the ClickHouse server's certificate (default: system roots)")
	fs.StringVar(&c.chCert, "clickhouse-cert", "", "PEM client certificate for ClickHouse, with --clickhouse-key")
	fs.StringVar(&c.chKey, "clickhouse-key", "", "PEM private key of --clickhouse-cert")
}

// connectNATS connects to url with the flags' authentication and TLS; errors
// name the flags to check.
func (c *connFlags) connectNATS(ctx context.Context, url, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := c.natsOptions()
	if err != nil {
		return nil, nil, err
	}
	return bus.ConnectWith(ctx, url, name, opts, log)
}

// secret resolves the secret reference of flag name; errors name the flag and
// never the secret.
func secret(name, ref string) (string, error) {
	v, err := secrets.Value(ref)
	if err != nil {
		return "", usageError{fmt.Errorf("cannot use --%s: %w", name, err)}
	}
	return v, nil
}

// natsOptions resolves the NATS secrets and returns the connection options;
// connection errors then name these flags.
func (c *connFlags) natsOptions() (bus.ConnectOptions, error) {
	pw, err := secret("nats-password", c.natsPassword)
	if err != nil {
		return bus.ConnectOptions{}, err
	}
	tok, err := secret("nats-token", c.natsToken)
	if err != nil {
		return bus.ConnectOptions{}, err
	}
	return bus.ConnectOptions{
		User: c.natsUser, Password: pw, Token: tok,
		NkeySeedFile: c.natsNkeySeed, CredsFile: c.natsCreds,
		CAFile: c.natsCA, CertFile: c.natsCert, KeyFile: c.natsKey,
		InboxPrefix: c.natsInbox,
		SettingName: connFlagName,
	}, nil
}

// clickhouseConfig returns the ClickHouse configuration for dsn and database
// with the credentials and TLS of the flags.
func (c *connFlags) clickhouseConfig(dsn, database string, log *slog.Logger) (sink.ClickHouseConfig, error) {
	pw, err := secret("clickhouse-password", c.chPassword)
	if err != nil {
		return sink.ClickHouseConfig{}, err
	}
	return sink.ClickHouseConfig{
		DSN: dsn, Database: database, Log: log,
		Username: c.chUser, Password: pw,
		TLS: c.chTLS, CAFile: c.chCA, CertFile: c.chCert, KeyFile: c.chKey,
		SettingName: connFlagName,
	}, nil
}

// literalSecretFlags names the secret flags given as literals, for a start-up warning.
func (c *connFlags) literalSecretFlags() []string {
	var out []string
	for _, f := range []struct{ name, ref string }{
		{"--nats-password", c.natsPassword}, {"--nats-token", c.natsToken}, {"--clickhouse-password", c.chPassword},
	} {
		if secrets.IsLiteral(f.ref) {
			out = append(out, f.name)
		}
	}
	return out
}
