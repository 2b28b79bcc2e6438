package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/iotwatch/iotwatch/internal/secrets"
)

const (
	// dialTimeout bounds one connection attempt.
	dialTimeout = 2 * time.Second
	// minBackoff and maxBackoff bound the wait between (re)connection attempts.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// publishAsyncMaxPending bounds async publishes awaiting a PubAck per
	// JetStream context; a publisher beyond it stalls (back-pressure).
	publishAsyncMaxPending = 8192
)

// Connect is ConnectWith without authentication or TLS options (the URL may
// still carry credentials, and a server that requires TLS is verified against
// the system's roots).
func Connect(ctx context.Context, url string, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	return ConnectWith(ctx, url, name, ConnectOptions{}, log)
}

// ConnectWith dials the NATS server(s) at url (a comma-separated list is
// allowed) with the authentication and TLS settings of opts, and returns the
// connection and a JetStream context on it.
//
// Files named by opts are read, and opts checked, before the first dial; a
// problem is returned at once as a *SetupError. The first connection is then
// retried with exponential back-off while the server is unreachable, until it
// succeeds or ctx is done; the error then wraps the last dial error. A refusal
// that retrying cannot fix (authentication or TLS) is not retried: it is
// returned at once as a *SetupError naming the settings to check.
//
// Once connected, the connection reconnects forever with jittered back-off
// (100 ms doubling to 5 s), buffering publishes meanwhile, and logs disconnects,
// reconnects, closure and asynchronous errors (such as slow consumers) through
// log. Secrets (opts.Password, opts.Token, credentials in url) never appear in
// what it logs or returns. The caller closes the connection (Drain or Close).
func ConnectWith(ctx context.Context, url string, name string, co ConnectOptions, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	safeURL := RedactURL(url)
	log = slog.New(secrets.NewHandler(log.Handler(), co.secretValues(url)...)).With("nats_name", name)
	secOpts, err := co.options()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot connect to NATS at %q: %w", safeURL, err)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(dialTimeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(backoff),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("nats connection closed", "err", err)
				return
			}
			log.Debug("nats connection closed")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Error("nats async error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, secOpts...)
	var nc *nats.Conn
	for attempt := 0; ; attempt++ {
		nc, err = nats.Connect(url, opts...)
		if err == nil {
			break
		}
		if se := co.classify(err); se != nil {
			return nil, nil, fmt.Errorf("cannot connect to NATS at %q: %w", safeURL, se)
		}
		log.Warn("cannot connect to nats, retrying", "url", safeURL, "attempt", attempt+1, "err", err)
		t := time.NewTimer(backoff(attempt))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("cannot connect to NATS at %q after %d attempts: %w (last error: %w)", safeURL, attempt+1, ctx.Err(), err)
		case <-t.C:
		}
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(publishAsyncMaxPending))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("cannot create JetStream context on %q: %w", safeURL, err)
	}
	log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName(), "tls", tlsOn(nc))
	return nc, js, nil
}

// backoff returns the wait before (re)connection attempt n (0-based):
// 100 ms doubling up to 5 s, with up to 50% jitter so a fleet of clients does
// not reconnect in lock-step.
func backoff(n int) time.Duration {
	d := maxBackoff
	if n < 6 {
		d = min(minBackoff<<n, maxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

func tlsOn(nc *nats.Conn) bool {
	_, err := nc.TLSConnectionState()
	return err == nil
}

// Keys of the connection settings, as SetupError names them unless
// ConnectOptions.SettingName maps them to the names an operator knows (flags).
const (
	SettingURL      = "nats.url"
	SettingUser     = "nats.user"
	SettingPassword = "nats.password"
	SettingToken    = "nats.token"
	SettingNkeySeed = "nats.nkey_seed"
	SettingCreds    = "nats.creds"
	SettingCA       = "nats.ca"
	SettingCert     = "nats.cert"
	SettingKey      = "nats.key"
	SettingInbox    = "nats.inbox_prefix"
)

// ConnectOptions are the authentication and TLS settings of ConnectWith. The
// zero value connects without credentials, and with TLS only if the server
// requires it (verified against the system's roots).
//
// At most one of User, Token, NkeySeedFile and CredsFile may be set. Password and
// Token hold the secrets themselves (resolve "file:"/"env:" references with
// package secrets first); the other fields name files.
type ConnectOptions struct {
	User     string // user name, with Password
	Password string // secret
	Token    string // secret: an authorization token
	// NkeySeedFile holds a user nkey seed ("SU..."), which signs the server's nonce.
	NkeySeedFile string
	// CredsFile is a decentralized-auth credentials file (user JWT + nkey seed, as
	// "nsc" or "nats context" write it).
	CredsFile string
	// CAFile is a PEM bundle of the certificate authorities that the server's
	// certificate must chain to; setting it, or CertFile, makes TLS mandatory.
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its private key, for
	// servers that verify clients (nats-server "verify: true"). Both or neither.
	CertFile, KeyFile string
	// InboxPrefix is the subject prefix of the client's reply inboxes
	// (schemas.InboxPipeline and its siblings); empty keeps NATS's "_INBOX".
	// Permissions that let a role subscribe to its own prefix only keep
	// other roles from reading its replies.
	InboxPrefix string
	// SettingName maps a Setting* key to the name an operator knows it by, such as
	// a command-line flag; nil keeps the keys.
	SettingName func(key string) string
}

// SetupError reports a connection refused for a reason that retrying cannot fix:
// authentication, TLS, or an unusable file. Its message names the settings to
// check, never a secret.
type SetupError struct {
	Reason   string   // what went wrong, such as "authorization violation"
	Settings []string // names of the settings to check (mapped by SettingName)
	Err      error    // the underlying error, if any
}

func (e *SetupError) Error() string {
	if len(e.Settings) == 0 {
		return e.Reason
	}
	return e.Reason + ": check " + strings.Join(e.Settings, "/")
}

func (e *SetupError) Unwrap() error { return e.Err }

func (co ConnectOptions) setupError(err error, reason string, keys ...string) *SetupError {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k
		if co.SettingName != nil {
			names[i] = co.SettingName(k)
		}
	}
	return &SetupError{Reason: reason, Settings: names, Err: err}
}

// secretValues are the strings that must never be logged: the password, the
// token and credentials in url.
func (co ConnectOptions) secretValues(url string) []string {
	out := []string{co.Password, co.Token}
	for _, u := range strings.Split(url, ",") {
		if p, err := neturl.Parse(strings.TrimSpace(u)); err == nil && p.User != nil {
			if pw, ok := p.User.Password(); ok {
				out = append(out, pw)
			} else {
				out = append(out, p.User.Username()) // a token
			}
		}
	}
	return out
}

// RedactURL returns a NATS URL list with passwords, and tokens given as the user
// part, masked; an unparsable entry is masked whole.
func RedactURL(url string) string {
	parts := strings.Split(url, ",")
	for i, u := range parts {
		p, err := neturl.Parse(strings.TrimSpace(u))
		switch {
		case err != nil:
			parts[i] = "(unparsable URL)"
		case p.User == nil:
		default:
			if _, ok := p.User.Password(); ok {
				p.User = neturl.UserPassword(p.User.Username(), "xxxxx")
			} else {
				p.User = neturl.User("xxxxx")
			}
			parts[i] = p.String()
		}
	}
	return strings.Join(parts, ",")
}

// authKeys names the settings to check when the server rejects the credentials.
func (co ConnectOptions) authKeys() []string {
	switch {
	case co.CredsFile != "":
		return []string{SettingCreds}
	case co.NkeySeedFile != "":
		return []string{SettingNkeySeed}
	case co.Token != "":
		return []string{SettingToken}
	case co.User != "" || co.Password != "":
		return []string{SettingUser, SettingPassword}
	default: // the server wants credentials and none were given (or the URL's are wrong)
		return []string{SettingURL, SettingUser, SettingPassword, SettingToken, SettingNkeySeed, SettingCreds}
	}
}

// options checks co, reads its files and returns the nats.go options.
func (co ConnectOptions) options() ([]nats.Option, error) {
	n := 0
	for _, set := range []bool{co.User != "", co.Token != "", co.NkeySeedFile != "", co.CredsFile != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return nil, co.setupError(nil, "more than one authentication method", SettingUser, SettingToken, SettingNkeySeed, SettingCreds)
	case co.Password != "" && co.User == "":
		return nil, co.setupError(nil, "a password without a user", SettingUser)
	case co.User != "" && co.Password == "":
		return nil, co.setupError(nil, "a user without a password", SettingPassword)
	case (co.CertFile == "") != (co.KeyFile == ""):
		return nil, co.setupError(nil, "a client certificate needs both a certificate and a key file", SettingCert, SettingKey)
	}
	var opts []nats.Option
	switch {
	case co.User != "":
		opts = append(opts, nats.UserInfo(co.User, co.Password))
	case co.Token != "":
		opts = append(opts, nats.Token(co.Token))
	case co.NkeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(co.NkeySeedFile)
		if err != nil {
			return nil, co.setupError(err, fmt.Sprintf("cannot read nkey seed file %q: %v", co.NkeySeedFile, unwrapPath(err)), SettingNkeySeed)
		}
		opts = append(opts, o)
	case co.CredsFile != "":
		if _, err := os.ReadFile(co.CredsFile); err != nil {
			return nil, co.setupError(err, fmt.Sprintf("cannot read credentials file %q: %v", co.CredsFile, unwrapPath(err)), SettingCreds)
		}
		opts = append(opts, nats.UserCredentials(co.CredsFile))
	}
	if co.CAFile != "" || co.CertFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if co.CAFile != "" {
			pem, err := os.ReadFile(co.CAFile)
			if err != nil {
				return nil, co.setupError(err, fmt.Sprintf("cannot read CA file %q: %v", co.CAFile, unwrapPath(err)), SettingCA)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, co.setupError(nil, fmt.Sprintf("cannot use CA file %q: no PEM certificate in it", co.CAFile), SettingCA)
			}
		}
		if co.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(co.CertFile, co.KeyFile)
			if err != nil {
				return nil, co.setupError(err, fmt.Sprintf("cannot load client certificate %q with key %q: %v", co.CertFile, co.KeyFile, unwrapPath(err)), SettingCert, SettingKey)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(cfg))
	}
	if co.InboxPrefix != "" {
		if strings.ContainsAny(co.InboxPrefix, "*> \t") || strings.HasSuffix(co.InboxPrefix, ".") || strings.HasPrefix(co.InboxPrefix, ".") || strings.Contains(co.InboxPrefix, "..") {
			return nil, co.setupError(nil, fmt.Sprintf("cannot use inbox prefix %q: want subject tokens without wildcards or spaces, not ending in '.'", co.InboxPrefix), SettingInbox)
		}
		opts = append(opts, nats.CustomInboxPrefix(co.InboxPrefix))
	}
	return opts, nil
}

// unwrapPath drops the *os.PathError wrapper whose path the caller already quotes.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// classify returns a *SetupError when err from a dial is one that retrying
// cannot fix (authentication or TLS), and nil when the dial may be retried.
func (co ConnectOptions) classify(err error) *SetupError {
	msg := strings.TrimPrefix(err.Error(), "nats: ")
	var (
		unknownCA   x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidCert x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		opErr       *net.OpError
	)
	for _, auth := range []error{nats.ErrAuthorization, nats.ErrAuthExpired, nats.ErrAuthRevoked, nats.ErrAccountAuthExpired} {
		if errors.Is(err, auth) { // the server's own wording varies in case
			return co.setupError(err, strings.TrimPrefix(auth.Error(), "nats: "), co.authKeys()...)
		}
	}
	switch {
	case errors.Is(err, nats.ErrNkeysNotSupported):
		return co.setupError(err, msg, SettingNkeySeed)
	case errors.As(err, &hostErr):
		return co.setupError(err, "TLS: "+msg, SettingURL, SettingCA)
	case errors.As(err, &unknownCA), errors.As(err, &invalidCert), errors.As(err, &verifyErr):
		return co.setupError(err, "TLS: "+msg, SettingCA)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return co.setupError(err, "TLS: "+msg, SettingCA)
	case errors.Is(err, nats.ErrSecureConnWanted), errors.As(err, &recordErr):
		return co.setupError(err, "TLS: "+msg, SettingURL, SettingCA, SettingCert)
	case errors.Is(err, nats.ErrClientCertOrRootCAsRequired):
		return co.setupError(err, "TLS: "+msg, SettingCA, SettingCert, SettingKey)
	case errors.As(err, &opErr) && opErr.Op == "remote error" && strings.Contains(msg, "tls:"):
		// An alert from the server: it rejected our certificate, or wanted one.
		return co.setupError(err, "TLS: "+msg, SettingCert, SettingKey)
	case strings.Contains(msg, "tls: "):
		return co.setupError(err, "TLS: "+msg, SettingCA, SettingCert, SettingKey)
	}
	return nil
}
