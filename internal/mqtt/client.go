package mqtt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Options configures a connection.
type Options struct {
	// Addr is the broker's host:port.
	Addr string
	// ClientID is the MQTT client id; required (empty ids are refused by
	// brokers that do not assign them).
	ClientID string
	// Username and Password authenticate the connection; empty means none.
	Username, Password string
	// KeepAlive is the keep-alive interval announced to the broker and the
	// period of PINGREQs; 0 means 30 s.
	KeepAlive time.Duration
	// OnMessage, if set, is called from the read goroutine with every
	// incoming PUBLISH. It must not block and must not retain payload.
	OnMessage func(topic string, payload []byte)
	// MaxPacket bounds incoming packets; 0 means DefaultMaxPacket.
	MaxPacket int
}

// ConnectError is a CONNACK refusal.
type ConnectError struct {
	Code byte // 1 protocol version, 2 identifier, 3 server unavailable, 4 bad credentials, 5 not authorized
}

func (e *ConnectError) Error() string {
	reasons := [...]string{1: "unacceptable protocol version", 2: "identifier rejected", 3: "server unavailable", 4: "bad user name or password", 5: "not authorized"}
	if int(e.Code) < len(reasons) && reasons[e.Code] != "" {
		return "connection refused: " + reasons[e.Code]
	}
	return fmt.Sprintf("connection refused: code %d", e.Code)
}

// ErrClosed is returned by calls on a closed or broken connection.
var ErrClosed = errors.New("MQTT connection closed")

// Client is one MQTT connection. Its methods are safe for concurrent use.
// A Client does not reconnect: after Done is closed, Err says why, and every
// call fails; dial a new one.
type Client struct {
	o    Options
	conn net.Conn

	wmu sync.Mutex // serializes writes to conn

	mu      sync.Mutex
	nextID  uint16
	pending map[uint16]chan packet // PUBACK/SUBACK waiters by packet id
	err     error

	done chan struct{}
	wg   sync.WaitGroup
}

// Dial connects to o.Addr, sends CONNECT and waits for CONNACK (bounded by
// ctx). A refusal is a *ConnectError.
func Dial(ctx context.Context, o Options) (*Client, error) {
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.MaxPacket <= 0 {
		o.MaxPacket = DefaultMaxPacket
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to MQTT broker %q: %w", o.Addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	br := bufio.NewReader(conn)
	ka := uint16(min(o.KeepAlive/time.Second, 65535))
	_, err = conn.Write(encodeConnect(o.ClientID, o.Username, o.Password, max(ka, 1)))
	var p packet
	if err == nil {
		p, err = readPacket(br, o.MaxPacket)
	}
	var code byte
	if err == nil {
		code, err = decodeConnack(p)
	}
	if !stop() || err != nil {
		conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("cannot connect to MQTT broker %q as %q: %w", o.Addr, o.ClientID, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if code != 0 {
		conn.Close()
		return nil, fmt.Errorf("cannot connect to MQTT broker %q as %q: %w", o.Addr, o.ClientID, &ConnectError{Code: code})
	}
	c := &Client{o: o, conn: conn, pending: map[uint16]chan packet{}, done: make(chan struct{})}
	c.wg.Go(func() { c.readLoop(br) })
	c.wg.Go(c.pingLoop)
	return c, nil
}

// Done is closed when the connection ends.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Publish sends payload to topic with QoS 0 (sent) or 1 (acknowledged by the
// broker before Publish returns, bounded by ctx).
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, qos byte) error {
	if qos > 1 {
		return fmt.Errorf("cannot publish to %q: QoS %d is not supported", topic, qos)
	}
	if qos == 0 {
		if err := c.write(encodePublish(topic, payload, 0, 0)); err != nil {
			return fmt.Errorf("cannot publish to %q: %w", topic, err)
		}
		return nil
	}
	id, ch, err := c.reserve()
	if err != nil {
		return fmt.Errorf("cannot publish to %q: %w", topic, err)
	}
	if _, err := c.await(ctx, id, ch, encodePublish(topic, payload, 1, id)); err != nil {
		return fmt.Errorf("cannot publish to %q: %w", topic, err)
	}
	return nil
}

// Subscribe subscribes to filter with the maximum QoS qos (0 or 1) and waits
// for the broker's SUBACK, bounded by ctx. A refused subscription is an error.
func (c *Client) Subscribe(ctx context.Context, filter string, qos byte) error {
	if qos > 1 {
		return fmt.Errorf("cannot subscribe to %q: QoS %d is not supported", filter, qos)
	}
	id, ch, err := c.reserve()
	if err != nil {
		return fmt.Errorf("cannot subscribe to %q: %w", filter, err)
	}
	p, err := c.await(ctx, id, ch, encodeSubscribe(id, filter, qos))
	if err != nil {
		return fmt.Errorf("cannot subscribe to %q: %w", filter, err)
	}
	if p.typ != typeSuback {
		return fmt.Errorf("cannot subscribe to %q: %w: answered by packet type %d", filter, ErrMalformed, p.typ)
	}
	_, codes, _ := decodeID(p)
	if len(codes) != 1 || codes[0] > 2 {
		return fmt.Errorf("cannot subscribe to %q: refused by the broker (%x)", filter, codes)
	}
	return nil
}

// Close sends DISCONNECT, closes the connection and waits for the client's
// goroutines. It is safe to call more than once.
func (c *Client) Close() error {
	_ = c.write(appendPacket(nil, typeDisconnect, 0))
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

func (c *Client) write(b []byte) error {
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.o.KeepAlive))
	if _, err := c.conn.Write(b); err != nil {
		c.fail(fmt.Errorf("cannot write to MQTT broker %q: %w", c.o.Addr, err))
		return err
	}
	return nil
}

// reserve allocates a packet id with a waiter.
func (c *Client) reserve() (uint16, chan packet, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, nil, c.err
	}
	if len(c.pending) >= 65535 {
		return 0, nil, errors.New("too many requests in flight")
	}
	for {
		c.nextID++
		if c.nextID != 0 && c.pending[c.nextID] == nil {
			break
		}
	}
	ch := make(chan packet, 1)
	c.pending[c.nextID] = ch
	return c.nextID, ch, nil
}

// await sends b and waits for the acknowledgement of id.
func (c *Client) await(ctx context.Context, id uint16, ch chan packet, b []byte) (packet, error) {
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := c.write(b); err != nil {
		return packet{}, err
	}
	select {
	case p := <-ch:
		return p, nil
	case <-c.done:
		return packet{}, c.Err()
	case <-ctx.Done():
		return packet{}, ctx.Err()
	}
}

// fail records the first error and closes the connection.
func (c *Client) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	close(c.done)
	_ = c.conn.Close()
}

func (c *Client) readLoop(br *bufio.Reader) {
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(c.o.KeepAlive * 3 / 2))
		p, err := readPacket(br, c.o.MaxPacket)
		if err != nil {
			c.fail(fmt.Errorf("cannot read from MQTT broker %q: %w", c.o.Addr, err))
			return
		}
		switch p.typ {
		case typePublish:
			m, err := decodePublish(p)
			if err == nil && m.qos > 1 {
				err = fmt.Errorf("cannot accept PUBLISH on %q: QoS 2 is not supported", m.topic)
			}
			if err != nil {
				c.fail(err)
				return
			}
			if c.o.OnMessage != nil {
				c.o.OnMessage(m.topic, m.payload)
			}
			if m.qos == 1 {
				_ = c.write(encodeID(typePuback, m.id))
			}
		case typePuback, typeSuback, typeUnsuback:
			id, _, err := decodeID(p)
			if err != nil {
				c.fail(err)
				return
			}
			c.mu.Lock()
			ch := c.pending[id]
			c.mu.Unlock()
			if ch != nil {
				select {
				case ch <- p:
				default:
				}
			}
		case typePingresp:
		default:
			c.fail(fmt.Errorf("cannot handle MQTT packet type %d from %q: %w", p.typ, c.o.Addr, ErrMalformed))
			return
		}
	}
}

func (c *Client) pingLoop() {
	t := time.NewTicker(c.o.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			_ = c.write(appendPacket(nil, typePingreq, 0))
		}
	}
}
