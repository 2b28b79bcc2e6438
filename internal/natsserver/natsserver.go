// Package natsserver runs the real NATS server (nats-server/v2) in-process with
// JetStream enabled: for the demo and for tests, never in production, where
// iotwatch connects to an external NATS cluster (package bus).
package natsserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long Start waits for the server to accept clients.
const readyTimeout = 10 * time.Second

// Options configures Start. The zero value is valid.
type Options struct {
	// StoreDir is the JetStream file store directory. Empty means a temporary
	// directory that Shutdown removes. A non-empty StoreDir is kept, so a server
	// started again on it finds its streams, consumers and KV buckets.
	StoreDir string
	// Port is the client port on 127.0.0.1; 0 picks a random free port.
	Port int
	// Log receives the server's notices, warnings and errors; nil discards them.
	Log *slog.Logger

	// TLS, when set, makes the server require TLS from clients with this
	// configuration (Certificates holds the server's). With ClientAuth set to
	// tls.RequireAndVerifyClientCert and ClientCAs, clients must present a
	// certificate those CAs signed (nats-server "verify: true").
	TLS *tls.Config
	// Users maps user names to passwords that may connect.
	Users map[string]string
	// Nkeys are the public user nkeys ("U...") that may connect, by signing the
	// server's nonce with their seed. They may be combined with Users.
	Nkeys []string
	// Token, when set, is the authorization token clients must present. It
	// cannot be combined with Users or Nkeys.
	Token string
}

// Server is an in-process nats-server with JetStream enabled.
type Server struct {
	srv     *server.Server
	tempDir string // removed on Shutdown; empty when the caller owns StoreDir
}

// Start starts an in-process nats-server with JetStream (file storage)
// listening on 127.0.0.1 and returns once it accepts connections.
func Start(o Options) (*Server, error) {
	e := &Server{}
	dir := o.StoreDir
	if dir == "" {
		d, err := os.MkdirTemp("", "iotwatch-nats-")
		if err != nil {
			return nil, fmt.Errorf("cannot create temporary JetStream store: %w", err)
		}
		dir, e.tempDir = d, d
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:             "iotwatch-embedded",
		Host:                   "127.0.0.1",
		Port:                   port,
		JetStream:              true,
		StoreDir:               dir,
		NoSigs:                 true,
		NoLog:                  o.Log == nil,
		DisableJetStreamBanner: true,
	}
	if err := o.secure(opts); err != nil {
		e.removeTemp()
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		e.removeTemp()
		return nil, fmt.Errorf("cannot create embedded NATS server (store %q): %w", dir, err)
	}
	if o.Log != nil {
		srv.SetLoggerV2(serverLogger{o.Log}, false, false, false)
	}
	e.srv = srv
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		e.Shutdown()
		return nil, fmt.Errorf("cannot start embedded NATS server on port %d (store %q): not ready after %s", o.Port, dir, readyTimeout)
	}
	if !srv.JetStreamEnabled() {
		e.Shutdown()
		return nil, fmt.Errorf("cannot start embedded NATS server (store %q): JetStream is not enabled", dir)
	}
	return e, nil
}

// secure applies the TLS and authentication options to opts.
func (o Options) secure(opts *server.Options) error {
	if o.Token != "" && (len(o.Users) > 0 || len(o.Nkeys) > 0) {
		return errors.New("cannot start embedded NATS server: a token cannot be combined with users or nkeys")
	}
	if o.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = o.TLS
		opts.TLSVerify = o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 2 // seconds
	}
	opts.Authorization = o.Token
	for user, pass := range o.Users {
		opts.Users = append(opts.Users, &server.User{Username: user, Password: pass})
	}
	for _, pub := range o.Nkeys {
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: pub})
	}
	return nil
}

// URL returns the client URL, such as nats://127.0.0.1:43127.
func (e *Server) URL() string { return e.srv.ClientURL() }

// Port returns the client port the server listens on, so that a test can start
// a server again on the same port and watch clients reconnect.
func (e *Server) Port() int {
	if a, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

// Shutdown stops the server, waits until it has stopped and removes the
// temporary store if Start created one. It is safe to call twice.
func (e *Server) Shutdown() {
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
	e.removeTemp()
}

func (e *Server) removeTemp() {
	if e.tempDir != "" {
		_ = os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

// serverLogger adapts nats-server's printf-style logger to slog. Messages are
// constant; the server's text goes into the "detail" key.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) {
	l.log.Info("nats server notice", "detail", fmt.Sprintf(format, v...))
}

func (l serverLogger) Warnf(format string, v ...any) {
	l.log.Warn("nats server warning", "detail", fmt.Sprintf(format, v...))
}

func (l serverLogger) Fatalf(format string, v ...any) {
	l.log.Error("nats server fatal error", "detail", fmt.Sprintf(format, v...))
}

func (l serverLogger) Errorf(format string, v ...any) {
	l.log.Error("nats server error", "detail", fmt.Sprintf(format, v...))
}

func (l serverLogger) Debugf(format string, v ...any) {
	l.log.Debug("nats server debug", "detail", fmt.Sprintf(format, v...))
}

func (l serverLogger) Tracef(format string, v ...any) {
	l.log.Debug("nats server trace", "detail", fmt.Sprintf(format, v...))
}
