package forwardauth

import (
	"net"
	"testing"
	"time"
)

// TestLimitListener: with n connections open, the next is not accepted until
// one of them closes.
func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := LimitListener(raw, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var clients []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	first := <-accepted
	<-accepted
	select {
	case <-accepted:
		t.Fatal("a third connection was accepted with the limit at 2")
	case <-time.After(200 * time.Millisecond): // a bound on a negative: the accept must not happen
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(time.Minute):
		t.Fatal("the third connection was not accepted after one closed")
	}
}
