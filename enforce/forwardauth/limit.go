package forwardauth

import (
	"net"
	"sync"
)

// Server limits of 'iotwatch enforce http': a forward-auth check is one small
// request with a few headers, from a handful of gateway processes that keep
// their connections alive.
const (
	// DefaultMaxConns bounds the open connections (LimitListener).
	DefaultMaxConns = 4096
	// DefaultMaxHeaderBytes bounds a request's header (http.Server.MaxHeaderBytes;
	// Go's default is 1 MB).
	DefaultMaxHeaderBytes = 16 << 10
)

// LimitListener returns a listener that holds at most n connections of l
// open at once: Accept waits while n are open, so that a flood of idle
// connections costs at most n of them (and the kernel's backlog queues the
// rest). n <= 0 means no limit.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
